// url-domains: a traptor stage in Go — the domains a post links to.
//
// It reads only the post's expanded URLs (no JSON parsing) and adds
// {"domains": ["example.com", …]}: each link's host, lowercased, without a
// leading "www." (unless strip_www = false), each domain once, in link order.
// A post without links is kept as it is.
package main

import (
	"net/url"
	"strings"

	"url-domains/traptor"
)

type stage struct{ stripWWW bool }

func (s *stage) Describe() traptor.Description {
	return traptor.Description{
		Name:    "url-domains",
		Version: "0.1.0",
		Kind:    traptor.Enricher,
		Summary: "Adds the domains a post links to (its expanded URLs), lowercased, each once",
		ConfigSchema: `{"type":"object","additionalProperties":false,` +
			`"properties":{"strip_www":{"type":"boolean","default":true,"description":"drop a leading www."}}}`,
		Reads: traptor.URLs,
	}
}

func (s *stage) Init(config []byte) (traptor.Fields, error) {
	var c struct {
		StripWWW *bool `json:"strip_www"`
	}
	if err := traptor.DecodeConfig(config, &c); err != nil {
		return 0, err
	}
	s.stripWWW = c.StripWWW == nil || *c.StripWWW
	return traptor.URLs, nil
}

// domain is the host of a link, or "" when it has none.
func (s *stage) domain(link string) string {
	u, err := url.Parse(strings.TrimSpace(link))
	if err != nil || u.Host == "" {
		// "example.com/path" without a scheme: take what comes before the path.
		if u, err = url.Parse("http://" + strings.TrimSpace(link)); err != nil {
			return ""
		}
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if s.stripWWW {
		host = strings.TrimPrefix(host, "www.")
	}
	return host
}

func (s *stage) Process(p traptor.Post) traptor.Outcome {
	links := p.URLs()
	var domains []string
	for _, l := range links {
		d := s.domain(l)
		if d == "" {
			continue
		}
		seen := false
		for _, x := range domains {
			seen = seen || x == d
		}
		if !seen {
			domains = append(domains, d)
		}
	}
	if len(domains) == 0 {
		return traptor.Keep()
	}
	return traptor.Enrich(traptor.NewEnrichment().Strings("domains", domains))
}

func init() { traptor.Register(&stage{stripWWW: true}) }

func main() {}
