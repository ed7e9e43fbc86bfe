// noop: a Go stage that keeps every post and reads nothing. Its cost is the
// boundary's alone: scripts/bench-stages.sh measures it beside the others.
package main

import "noop/traptor"

type stage struct{}

func (stage) Describe() traptor.Description {
	return traptor.Description{Name: "noop", Version: "0.1.0", Kind: traptor.Enricher,
		Summary: "Keeps every post; reads nothing (a benchmark of the boundary)", ConfigSchema: `{"type":"object"}`}
}

func (stage) Init([]byte) (traptor.Fields, error) { return 0, nil }

func (stage) Process(traptor.Post) traptor.Outcome { return traptor.Keep() }

func init() { traptor.Register(stage{}) }

func main() {}
