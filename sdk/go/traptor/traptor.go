// Package traptor is the SDK of traptor stages written in Go: a stage
// implements Stage (Describe, Init, Process) and registers itself with
// Register; the package hides the plugin ABI (WIT world
// traptor:plugin/plugin@0.2.0, canonical ABI) behind Post and Outcome.
//
// `traptor-host plugin new NAME --lang go` writes this package into the
// project (do not edit it there: a newer traptor-host writes a newer one);
// the same files are in traptor's repository under sdk/go/traptor.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared, then make a
// component of the module (`traptor-host plugin build` does both).
package traptor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unsafe"
)

// Fields are the parts of a post a stage reads; the host fills in only
// these (WIT `flags fields`). Reading another one panics, naming it.
type Fields uint16

const (
	Raw Fields = 1 << iota
	ID
	Source
	Text
	Author // AuthorID and AuthorHandle
	Lang
	CreatedAt
	Hashtags
	Mentions
	URLs
	Cashtags
	Coordinates
	Kinds // IsRetweet, IsReply, IsQuote
	MatchedRules
)

var fieldNames = [...]string{"raw", "id", "source", "text", "author", "lang", "created-at", "hashtags",
	"mentions", "urls", "cashtags", "coordinates", "kinds", "matched-rules"}

// String lists the fields by their WIT names, e.g. "text|lang".
func (f Fields) String() string {
	s := ""
	for i, n := range fieldNames {
		if f&(1<<i) != 0 {
			if s != "" {
				s += "|"
			}
			s += n
		}
	}
	return s
}

// Kind says whether a stage adds fields or drops posts.
type Kind uint8

const (
	Enricher Kind = iota
	Filter
)

// Description is what a stage says about itself (`plugin inspect`).
type Description struct {
	Name, Version string
	Kind          Kind
	Summary       string
	// JSON Schema of the configuration Init accepts.
	ConfigSchema string
	// Every field the stage may read, whatever its configuration.
	Reads Fields
}

// Stage is what a plugin author writes.
type Stage interface {
	Describe() Description
	// Init gets the stage's `config` table as JSON ("{}" when empty) and
	// returns the fields this configuration reads, or an error naming what
	// is wrong (the pipeline is refused with it).
	Init(config []byte) (Fields, error)
	// Process answers for one post: Keep(), Enrich(...), Drop(...), Fail(...).
	// A panic becomes an error for this post only (Run in tests panics).
	Process(p Post) Outcome
}

var registered Stage

// Register makes s the stage this component exports; call it from init().
func Register(s Stage) { registered = s }

// DecodeConfig reads the stage's config (JSON, as Init gets it) into v, a
// pointer to a struct with json tags: an unknown key or a wrong type is
// refused with a message naming it (`config: json: unknown field "x"`).
func DecodeConfig(config []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(config))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("config: %v", err)
	}
	return nil
}

// Point is an exact location, longitude first (GeoJSON order).
type Point struct{ Lng, Lat float64 }

// The canonical-ABI layout of the WIT records (natural alignment, as Go
// lays out structs): a post's record is read in place, never copied.
type span struct{ start, len uint32 }
type rng struct{ first, count uint32 }
type optSpan struct {
	some uint8
	_    [3]uint8
	s    span
}
type optPoint struct {
	some uint8
	_    [7]uint8
	p    Point
}
type postRec struct {
	raw, id, source, text                   span
	authorID, authorHandle, lang, createdAt optSpan
	hashtags, mentions, urls, cashtags      rng
	coordinates                             optPoint
	isRetweet, isReply, isQuote             uint8
	_                                       uint8
	matchedRules                            rng
	_                                       uint32
}
type ruleRec struct {
	id       span
	tag      optSpan
	value    span
	ruleType span
}

// The layout above must be the canonical ABI's (152 and 36 bytes).
var _ = [1]struct{}{}[unsafe.Sizeof(postRec{})-152]
var _ = [1]struct{}{}[unsafe.Sizeof(ruleRec{})-36]

// batch is a batch as the host sent it (or as testing built it).
type batch struct {
	count   uint32
	data    []byte
	posts   []postRec
	strings []span
	refs    []uint32
	rules   []ruleRec
	reads   Fields
}

func (b *batch) str(s span) string {
	if s.len == 0 {
		return ""
	}
	return unsafe.String(&b.data[s.start], int(s.len))
}

// Post is one post of a batch: its strings are views of the batch's
// buffer, valid during Process (copy one to keep it: strings.Clone).
type Post struct {
	b *batch
	i int
}

func (p Post) rec(f Fields, name string) *postRec {
	if p.b.reads&f == 0 {
		panic(fmt.Sprintf("traptor: the stage read the field `%s`, which it does not declare (add traptor.%s to the Fields Init returns)", name, goName(f)))
	}
	return &p.b.posts[p.i]
}

func goName(f Fields) string {
	names := [...]string{"Raw", "ID", "Source", "Text", "Author", "Lang", "CreatedAt", "Hashtags", "Mentions",
		"URLs", "Cashtags", "Coordinates", "Kinds", "MatchedRules"}
	for i, n := range names {
		if f == 1<<i {
			return n
		}
	}
	return f.String()
}

func (p Post) opt(o optSpan) (string, bool) {
	if o.some == 0 {
		return "", false
	}
	return p.b.str(o.s), true
}

func (p Post) list(r rng) []string {
	out := make([]string, r.count)
	for k := range out {
		out[k] = p.b.str(p.b.strings[r.first+uint32(k)])
	}
	return out
}

// Index is the post's place in its batch.
func (p Post) Index() int { return p.i }

// Raw is the original JSON, byte for byte as the source sent it.
func (p Post) Raw() string { return p.b.str(p.rec(Raw, "raw").raw) }

// ID is the post's id (a decimal string).
func (p Post) ID() string { return p.b.str(p.rec(ID, "id").id) }

// Source is the protocol: twitter-v1, x-v2, bluesky or mastodon.
func (p Post) Source() string { return p.b.str(p.rec(Source, "source").source) }

// Text is the full text, HTML escapes undone.
func (p Post) Text() string { return p.b.str(p.rec(Text, "text").text) }

// AuthorID is the author's user id, when the post has one.
func (p Post) AuthorID() (string, bool) { return p.opt(p.rec(Author, "author").authorID) }

// AuthorHandle is the author's screen name, DID …, when the post has one.
func (p Post) AuthorHandle() (string, bool) { return p.opt(p.rec(Author, "author").authorHandle) }

// Lang is the language code the source tagged the post with.
func (p Post) Lang() (string, bool) { return p.opt(p.rec(Lang, "lang").lang) }

// CreatedAt is the creation time, RFC 3339 in UTC.
func (p Post) CreatedAt() (string, bool) { return p.opt(p.rec(CreatedAt, "created-at").createdAt) }

// Hashtags without '#', as the source's entities list them.
func (p Post) Hashtags() []string { return p.list(p.rec(Hashtags, "hashtags").hashtags) }

// Mentions are handles without '@'.
func (p Post) Mentions() []string { return p.list(p.rec(Mentions, "mentions").mentions) }

// URLs are the expanded URLs.
func (p Post) URLs() []string { return p.list(p.rec(URLs, "urls").urls) }

// Cashtags without '$'.
func (p Post) Cashtags() []string { return p.list(p.rec(Cashtags, "cashtags").cashtags) }

// Coordinates is the exact location, when the post carries one.
func (p Post) Coordinates() (Point, bool) {
	c := p.rec(Coordinates, "coordinates").coordinates
	return c.p, c.some != 0
}

// IsRetweet, IsReply and IsQuote need the Kinds field.
func (p Post) IsRetweet() bool { return p.rec(Kinds, "kinds").isRetweet != 0 }
func (p Post) IsReply() bool   { return p.rec(Kinds, "kinds").isReply != 0 }
func (p Post) IsQuote() bool   { return p.rec(Kinds, "kinds").isQuote != 0 }

// MatchedRule is a rule the post was attributed to.
type MatchedRule struct {
	ID       string
	Tag      string
	HasTag   bool
	Value    string
	RuleType string // track, follow or locations
}

// MatchedRules are every rule the post matched, in rule order.
func (p Post) MatchedRules() []MatchedRule {
	r := p.rec(MatchedRules, "matched-rules").matchedRules
	out := make([]MatchedRule, r.count)
	for k := range out {
		rule := &p.b.rules[p.b.refs[r.first+uint32(k)]]
		tag, has := p.opt(rule.tag)
		out[k] = MatchedRule{ID: p.b.str(rule.id), Tag: tag, HasTag: has, Value: p.b.str(rule.value), RuleType: p.b.str(rule.ruleType)}
	}
	return out
}

// processOne turns a panic for one post (a bug, a field read without being
// declared) into an error for that post alone: the stage's on_error decides.
func processOne(p Post) (o Outcome) {
	defer func() {
		if r := recover(); r != nil {
			o = Fail(fmt.Sprint("panic: ", r))
		}
	}()
	return registered.Process(p)
}
