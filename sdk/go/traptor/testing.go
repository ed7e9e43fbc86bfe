package traptor

import "fmt"

// TestPost is a post for a stage's unit tests (go test): set what the
// stage reads. Run hands the stage only the fields its Init returned.
type TestPost struct {
	Raw, ID, Source, Text                   string
	AuthorID, AuthorHandle, Lang, CreatedAt *string
	Hashtags, Mentions, URLs, Cashtags      []string
	Coordinates                             *Point
	IsRetweet, IsReply, IsQuote             bool
	MatchedRules                            []MatchedRule
}

// Run configures s with config (JSON) and processes posts as one batch,
// the way the host does: the outcomes, in order, or Init's error.
func Run(s Stage, config string, posts []TestPost) ([]Outcome, error) {
	if config == "" {
		config = "{}"
	}
	fields, err := s.Init([]byte(config))
	if err != nil {
		return nil, err
	}
	b := encode(posts, fields)
	out := make([]Outcome, len(posts))
	for i := range posts {
		out[i] = s.Process(Post{b, i})
	}
	return out, nil
}

// Str is a *string for TestPost's optional fields.
func Str(s string) *string { return &s }

func encode(posts []TestPost, reads Fields) *batch {
	b := &batch{count: uint32(len(posts)), reads: reads}
	put := func(s string) span {
		sp := span{uint32(len(b.data)), uint32(len(s))}
		b.data = append(b.data, s...)
		return sp
	}
	opt := func(s *string) optSpan {
		if s == nil {
			return optSpan{}
		}
		return optSpan{some: 1, s: put(*s)}
	}
	list := func(items []string) rng {
		r := rng{uint32(len(b.strings)), uint32(len(items))}
		for _, it := range items {
			b.strings = append(b.strings, put(it))
		}
		return r
	}
	bit := func(v bool) uint8 {
		if v {
			return 1
		}
		return 0
	}
	for _, p := range posts {
		rec := postRec{raw: put(p.Raw), id: put(p.ID), source: put(p.Source), text: put(p.Text),
			authorID: opt(p.AuthorID), authorHandle: opt(p.AuthorHandle), lang: opt(p.Lang), createdAt: opt(p.CreatedAt),
			hashtags: list(p.Hashtags), mentions: list(p.Mentions), urls: list(p.URLs), cashtags: list(p.Cashtags),
			isRetweet: bit(p.IsRetweet), isReply: bit(p.IsReply), isQuote: bit(p.IsQuote)}
		if p.Coordinates != nil {
			rec.coordinates = optPoint{some: 1, p: *p.Coordinates}
		}
		rec.matchedRules.first = uint32(len(b.refs))
		for _, r := range p.MatchedRules {
			b.refs = append(b.refs, uint32(len(b.rules)))
			tag := optSpan{}
			if r.HasTag {
				tag = optSpan{some: 1, s: put(r.Tag)}
			}
			b.rules = append(b.rules, ruleRec{id: put(r.ID), tag: tag, value: put(r.Value), ruleType: put(r.RuleType)})
		}
		rec.matchedRules.count = uint32(len(p.MatchedRules))
		b.posts = append(b.posts, rec)
	}
	return b
}

// Fields of an Enrich outcome's object, its JSON text ("" for other outcomes).
func (o Outcome) Enrichment() string {
	if o.action != enrich {
		return ""
	}
	return o.text
}

// IsKeep, IsDrop and IsError tell the outcome apart; Reason is a drop's
// reason or an error's message.
func (o Outcome) IsKeep() bool   { return o.action == keep }
func (o Outcome) IsDrop() bool   { return o.action == drop }
func (o Outcome) IsError() bool  { return o.action == fail }
func (o Outcome) Reason() string { return o.text }

var _ fmt.Stringer = Outcome{}
