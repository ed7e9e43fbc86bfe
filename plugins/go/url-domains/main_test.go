package main

import (
	"strings"
	"testing"

	"url-domains/traptor"
)

func TestDomainsAreLowercasedWithoutWwwAndOnce(t *testing.T) {
	posts := []traptor.TestPost{
		{URLs: []string{"https://WWW.Example.com/a?b=c", "http://example.com/other", "https://sub.gov.uk:8443/x"}},
		{URLs: []string{"bit.ly/abc"}},
		{URLs: nil},
		{URLs: []string{"https://ja.wikipedia.org/wiki/東京"}},
	}
	out, err := traptor.Run(&stage{}, "", posts)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`{"domains":["example.com","sub.gov.uk"]}`, `{"domains":["bit.ly"]}`, "", `{"domains":["ja.wikipedia.org"]}`}
	for i, w := range want {
		if got := out[i].Enrichment(); got != w {
			t.Errorf("post %d: got %q, want %q", i, got, w)
		}
	}
	if !out[2].IsKeep() {
		t.Errorf("a post without links is kept: %v", out[2])
	}
}

func TestWwwIsKeptWhenAsked(t *testing.T) {
	out, err := traptor.Run(&stage{}, `{"strip_www": false}`, []traptor.TestPost{{URLs: []string{"https://www.example.com"}}})
	if err != nil || out[0].Enrichment() != `{"domains":["www.example.com"]}` {
		t.Fatalf("%v %v", out, err)
	}
}

func TestATypoInTheConfigIsRefused(t *testing.T) {
	_, err := traptor.Run(&stage{}, `{"strip_wwww": true}`, nil)
	if err == nil || !strings.Contains(err.Error(), "strip_wwww") {
		t.Fatalf("err = %v", err)
	}
}
