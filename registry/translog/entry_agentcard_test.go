package translog

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestAgentCardEntry(t *testing.T) {
	hex64 := func(c string) string { return strings.Repeat(c, 64) }
	good := Entry{Type: EventAgentCard, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Fingerprint: hex64("a"),
		IssuerKeyID: "0102", NameIndexes: []string{hex64("b"), hex64("c")}, CardDigest: hex64("d")}
	b, err := good.Marshal()
	if err != nil {
		t.Fatalf("Marshal = %v", err)
	}
	want := `{"v":2,"type":"agent_card","time":"2026-01-02T03:04:05Z","fingerprint_sha256":"` + hex64("a") +
		`","issuer_key_id":"0102","name_indexes":["` + hex64("b") + `","` + hex64("c") + `"],"card_sha256":"` + hex64("d") + `"}`
	if string(b) != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", b, want)
	}
	e, err := ParseEntry(b)
	if err != nil || e.CardDigest != good.CardDigest || e.Type != EventAgentCard {
		t.Fatalf("ParseEntry = %+v, %v", e, err)
	}
	for _, tt := range []struct {
		desc string
		edit func(*Entry)
	}{
		{"no card digest", func(e *Entry) { e.CardDigest = "" }},
		{"bad card digest", func(e *Entry) { e.CardDigest = hex64("D") }},
		{"no name indexes", func(e *Entry) { e.NameIndexes = nil }},
		{"a certificate", func(e *Entry) { e.Certificate = []byte{1} }},
		{"a previous fingerprint", func(e *Entry) { e.Previous = hex64("e") }},
		{"a reason", func(e *Entry) { e.Reason = "keyCompromise" }},
		{"card digest on register", func(e *Entry) { e.Type = EventRegister }},
		{"version 1", func(e *Entry) {
			e.Version, e.NameIndexes, e.IssuerKeyID, e.Actor, e.Type = EntryVersion1, nil, "", "ceremony", EventCeremony
		}},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			e := good
			tt.edit(&e)
			if _, err := e.Marshal(); !errors.Is(err, ErrInvalid) {
				t.Errorf("Marshal = %v, want ErrInvalid", err)
			}
		})
	}
	// A register entry with a card_sha256 member does not parse.
	reg := strings.Replace(want, `"agent_card"`, `"register"`, 1)
	if _, err := ParseEntry([]byte(reg)); !errors.Is(err, ErrInvalid) {
		t.Errorf("ParseEntry(register with card_sha256) = %v, want ErrInvalid", err)
	}
}
