package traptor

import (
	"strings"
	"testing"
)

type echo struct{ reads Fields }

func (e *echo) Describe() Description       { return Description{Name: "echo", Reads: e.reads} }
func (e *echo) Init([]byte) (Fields, error) { return e.reads, nil }
func (e *echo) Process(p Post) Outcome {
	en := NewEnrichment().String("text", p.Text()).Int("tags", int64(len(p.Hashtags())))
	if h, ok := p.AuthorHandle(); ok {
		en.String("author", h)
	}
	if c, ok := p.Coordinates(); ok {
		en.Float("lng", c.Lng)
	}
	for _, r := range p.MatchedRules() {
		en.String("rule", r.ID+"/"+r.Tag)
	}
	return Enrich(en)
}

func TestAPostReadsBackWhatWasEncoded(t *testing.T) {
	s := &echo{reads: Text | Hashtags | Author | Coordinates | MatchedRules}
	posts := []TestPost{
		{ID: "1", Text: "héllo \"wörld\"\n", Hashtags: []string{"a", "b"}, AuthorHandle: Str("me"),
			Coordinates: &Point{-1.5, 2}, MatchedRules: []MatchedRule{{ID: "r1", Tag: "t", HasTag: true, Value: "x", RuleType: "track"}}},
		{ID: "2", Text: "😀\u0007"},
	}
	out, err := Run(s, "", posts)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`{"text":"héllo \"wörld\"\n","tags":2,"author":"me","lng":-1.5,"rule":"r1/t"}`, `{"text":"😀\u0007","tags":0}`}
	for i, w := range want {
		if got := out[i].Enrichment(); got != w {
			t.Errorf("post %d: got %s, want %s", i, got, w)
		}
	}
}

func TestReadingAnUndeclaredFieldPanicsNamingIt(t *testing.T) {
	defer func() {
		r := recover()
		if r == nil || !strings.Contains(r.(string), "`hashtags`") {
			t.Fatalf("panic %v", r)
		}
	}()
	_, _ = Run(&echo{reads: Text}, "", []TestPost{{Text: "x"}})
}

func TestFieldsPrintByTheirWitNames(t *testing.T) {
	if s := (Text | CreatedAt | MatchedRules).String(); s != "text|created-at|matched-rules" {
		t.Fatal(s)
	}
}

func TestAPanicForOnePostBecomesAnErrorForThatPost(t *testing.T) {
	registered = &echo{reads: Text}
	b := encode([]TestPost{{Text: "x"}}, Text)
	if o := processOne(Post{b, 0}); !o.IsError() || !strings.Contains(o.Reason(), "`hashtags`") {
		t.Fatalf("%v", o)
	}
}
