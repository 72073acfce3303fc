package translog

import (
	"bytes"
	"testing"
)

// Seed corpora live in testdata/fuzz/<Target>/. Run, briefly:
//
//	go test -run '^$' -fuzz FuzzParseCheckpoint -fuzztime 10s ./registry/translog/

func FuzzParseCheckpoint(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCheckpoint(data)
		if err != nil {
			return
		}
		// Strict parsing means the text is exactly the canonical encoding.
		b, err := c.Marshal()
		if err != nil {
			t.Fatalf("parsed checkpoint does not marshal: %v", err)
		}
		if !bytes.Equal(b, data) {
			t.Fatalf("ParseCheckpoint accepted non-canonical %q (canonical %q)", data, b)
		}
	})
}

func FuzzOpenCheckpoint(f *testing.F) {
	s, v := testSignerVerifier(f, testOrigin, "a")
	if msg, err := SignCheckpoint(testCheckpoint(), s); err == nil {
		f.Add(msg)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := OpenCheckpoint(data, v)
		if err != nil {
			return
		}
		text, err := c.Marshal()
		if err != nil || !bytes.HasPrefix(data, text) {
			t.Fatalf("opened checkpoint %+v is not the signed text of %q", c, data)
		}
	})
}

func FuzzParseEntry(f *testing.F) {
	for _, e := range validEntries() {
		if b, err := e.Marshal(); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := ParseEntry(data)
		if err != nil {
			return
		}
		b, err := e.Marshal()
		if err != nil || !bytes.Equal(b, data) {
			t.Fatalf("ParseEntry accepted %q, which re-marshals to %q, %v", data, b, err)
		}
	})
}
