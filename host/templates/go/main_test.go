package main

import (
	"strings"
	"testing"

	"{{name}}/traptor"
)

func TestCountsWords(t *testing.T) {
	posts := []traptor.TestPost{{ID: "1", Text: "one two three four"}, {ID: "2", Text: "hi"}}
	out, err := traptor.Run(&stage{}, `{"min_words": 3}`, posts)
	if err != nil {
		t.Fatal(err)
	}
{{test_go}}
}

func TestRefusesATypoInItsConfig(t *testing.T) {
	_, err := traptor.Run(&stage{}, `{"min_word": 3}`, nil)
	if err == nil || !strings.Contains(err.Error(), "min_word") {
		t.Fatalf("err = %v", err)
	}
}
