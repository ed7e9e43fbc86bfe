// `{{name}}`: a traptor stage ({{kind}}) in Go, made by `traptor-host plugin new`.
//
// {{summary}}
// The package traptor (./traptor, written by plugin new) hides the plugin ABI.
package main

import (
	"fmt"
	"unicode"
	"unicode/utf8"

	"{{name}}/traptor"
)

type stage struct{ minWords int }

func (s *stage) Describe() traptor.Description {
	return traptor.Description{
		Name:    "{{name}}",
		Version: "0.1.0",
		Kind:    traptor.{{kind_variant}},
		Summary: "{{summary}}",
		ConfigSchema: `{"type":"object","additionalProperties":false,` +
			`"properties":{"min_words":{"type":"integer","minimum":0,"default":3}}}`,
		// The host sends only the fields a stage reads; reading another one
		// panics (first in go test), naming it.
		Reads: traptor.Text,
	}
}

// Init reads the stage's `config` table (JSON); unknown or mistyped keys
// are refused, naming the key.
func (s *stage) Init(config []byte) (traptor.Fields, error) {
	var c struct {
		MinWords *int `json:"min_words"`
	}
	if err := traptor.DecodeConfig(config, &c); err != nil {
		return 0, err
	}
	s.minWords = 3
	if c.MinWords != nil {
		if *c.MinWords < 0 {
			return 0, fmt.Errorf("config key `min_words` must be a whole number >= 0, not %d", *c.MinWords)
		}
		s.minWords = *c.MinWords
	}
	return traptor.Text, nil
}

// countWords counts runs of characters that are not Unicode White_Space.
func countWords(text string) int {
	words, inWord := 0, false
	for i := 0; i < len(text); {
		r, n := utf8.DecodeRuneInString(text[i:])
		i += n
		space := unicode.IsSpace(r)
		if !space && !inWord {
			words++
		}
		inWord = !space
	}
	return words
}

func (s *stage) Process(p traptor.Post) traptor.Outcome {
	words := countWords(p.Text())
{{process_go}}
}

func init() { traptor.Register(&stage{minWords: 3}) }

func main() {}
