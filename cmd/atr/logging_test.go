package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

// TestStderrSink: text passes through until a JSON logger writes; from then
// on every line on stderr is JSON, the final error included.
func TestStderrSink(t *testing.T) {
	tests := []struct {
		name string
		run  func(s *stderrSink)
		want []string // each line: "{" for a JSON line with that msg prefix after ":", or the exact text
	}{
		{"text only", func(s *stderrSink) {
			fmt.Fprintln(s, "hello")
			s.fail("x", errors.New("boom"), 1, "atr x: boom\n")
		}, []string{"hello", "atr x: boom"}},
		{"JSON then text then error", func(s *stderrSink) {
			newLogger(s, "info").Info("started")
			fmt.Fprint(s, "created key ")
			fmt.Fprintln(s, "abc")
			s.fail("x", errors.New("boom"), 1, "atr x: boom\n")
		}, []string{"{started", "{created key abc", "{atr x: boom"}},
		{"text cut mid-line by JSON", func(s *stderrSink) {
			fmt.Fprint(s, "partial")
			newLogger(s, "info").Warn("w")
			fmt.Fprint(s, "tail")
			s.flush()
		}, []string{"partial", "{w", "{tail"}},
		{"lines below the level write nothing and switch nothing", func(s *stderrSink) {
			newLogger(s, "warn").Info("quiet")
			s.fail("x", errors.New("boom"), 2, "atr x: boom\n")
		}, []string{"atr x: boom"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			s := newStderrSink(&b)
			tt.run(s)
			got := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
			if len(got) != len(tt.want) {
				t.Fatalf("got %d lines, want %d:\n%s", len(got), len(tt.want), b.String())
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(w, "{") {
					if got[i] != w {
						t.Errorf("line %d = %q, want %q", i, got[i], w)
					}
					continue
				}
				var m map[string]any
				if err := json.Unmarshal([]byte(got[i]), &m); err != nil {
					t.Errorf("line %d = %q, want a JSON log line", i, got[i])
					continue
				}
				if msg, _ := m["msg"].(string); msg != w[1:] {
					t.Errorf("line %d msg = %q, want %q", i, msg, w[1:])
				}
			}
		})
	}
}

// TestStderrNeverInterleaves replays issue 11 item 12 on a command that logs
// JSON and printed a human line to stderr after it (apikey create).
func TestStderrNeverInterleaves(t *testing.T) {
	dir := t.TempDir()
	a, out, errb := testApp(map[string]string{"ATR_DATA_DIR": dir})
	code := a.run(t.Context(), []string{"apikey", "create", "--owner", "ops", "--namespace", "acme", "--scopes", "agents:read", "--database-url", "sqlite:" + filepath.Join(dir, "atr.db")})
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, errb)
	}
	if !strings.HasPrefix(out.String(), "atr_") {
		t.Errorf("stdout %q does not hold the key alone", out)
	}
	checkStderrLines(t, errb.String(), true)
}

// BenchmarkRequestLogLine is the access log line every request writes
// (api's outer middleware: the request's fields, then its outcome), through
// atr serve's logger — JSON formatter and redaction hook — to io.Discard
// and to a file (docs/performance-history.md, eighteenth pass).
func BenchmarkRequestLogLine(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "serve.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for _, tc := range []struct {
		name string
		w    io.Writer
	}{{"discard", io.Discard}, {"file", f}} {
		b.Run(tc.name, func(b *testing.B) {
			log := newLogger(tc.w, "info").WithField("component", "api")
			b.ReportAllocs()
			for b.Loop() {
				log.WithFields(logrus.Fields{"request_id": "0123456789abcdef0123456789abcdef", "client_ip": "127.0.0.2",
					"route": "/v1/verify"}).WithFields(logrus.Fields{"method": "POST", "status": 200,
					"duration_ms": 1.234, "bytes_in": int64(2129)}).Info("request")
			}
		})
	}
}
