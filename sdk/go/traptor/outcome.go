package traptor

import (
	"strconv"
	"unicode/utf8"
)

type action uint8

const (
	keep action = iota
	enrich
	drop
	fail
)

// Outcome is what a stage answers for one post.
type Outcome struct {
	action action
	text   string
}

// Keep lets the post through unchanged.
func Keep() Outcome { return Outcome{} }

// Drop removes the post; the reason is counted and logged.
func Drop(reason string) Outcome { return Outcome{drop, reason} }

// Fail says this post could not be processed; the stage's on_error policy
// decides what happens to it.
func Fail(message string) Outcome { return Outcome{fail, message} }

// Enrich keeps the post and adds the enrichment's fields under
// traptor.enrichments.<stage name>.
func Enrich(e *Enrichment) Outcome { return Outcome{enrich, e.JSON()} }

// String is "keep", "enrich {…}", "drop: reason" or "error: message".
func (o Outcome) String() string {
	switch o.action {
	case enrich:
		return "enrich " + o.text
	case drop:
		return "drop: " + o.text
	case fail:
		return "error: " + o.text
	}
	return "keep"
}

// Enrichment is a JSON object built field by field, in order, compact.
type Enrichment struct{ buf []byte }

// NewEnrichment starts an empty object.
func NewEnrichment() *Enrichment { return &Enrichment{buf: make([]byte, 0, 64)} }

func (e *Enrichment) key(k string) {
	if len(e.buf) == 0 {
		e.buf = append(e.buf, '{')
	} else {
		e.buf = append(e.buf, ',')
	}
	e.buf = appendJSONString(e.buf, k)
	e.buf = append(e.buf, ':')
}

// Int adds a whole number.
func (e *Enrichment) Int(k string, v int64) *Enrichment {
	e.key(k)
	e.buf = strconv.AppendInt(e.buf, v, 10)
	return e
}

// Float adds a number (NaN and infinities become null: JSON has none).
func (e *Enrichment) Float(k string, v float64) *Enrichment {
	e.key(k)
	if v != v || v > 1.7976931348623157e308 || v < -1.7976931348623157e308 {
		e.buf = append(e.buf, "null"...)
	} else {
		e.buf = strconv.AppendFloat(e.buf, v, 'g', -1, 64)
	}
	return e
}

// Bool adds true or false.
func (e *Enrichment) Bool(k string, v bool) *Enrichment {
	e.key(k)
	e.buf = strconv.AppendBool(e.buf, v)
	return e
}

// String adds a string.
func (e *Enrichment) String(k, v string) *Enrichment {
	e.key(k)
	e.buf = appendJSONString(e.buf, v)
	return e
}

// Strings adds a list of strings.
func (e *Enrichment) Strings(k string, v []string) *Enrichment {
	e.key(k)
	e.buf = append(e.buf, '[')
	for i, s := range v {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		e.buf = appendJSONString(e.buf, s)
	}
	e.buf = append(e.buf, ']')
	return e
}

// RawJSON adds a value that is already JSON text (the host refuses an
// enrichment that is not valid JSON).
func (e *Enrichment) RawJSON(k, v string) *Enrichment {
	e.key(k)
	e.buf = append(e.buf, v...)
	return e
}

// JSON is the object's text.
func (e *Enrichment) JSON() string {
	if len(e.buf) == 0 {
		return "{}"
	}
	return string(e.buf) + "}"
}

func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			b = append(b, c)
			i++
			continue
		}
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, "\\ufffd"...)
		} else {
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}
