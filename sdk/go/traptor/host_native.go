//go:build !wasip1

package traptor

import "fmt"

// Natively (go test) log records and counters are kept for tests to read.
var (
	Logged   []string
	Counters = map[string]uint64{}
)

func logRecord(level Level, message string, kv []string) {
	Logged = append(Logged, fmt.Sprintf("%d %s %v", level, message, kv))
}

func addCounter(name string, delta uint64) { Counters[name] += delta }
