package main

import (
	"bytes"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

func parseLogLevel(s string) (logrus.Level, error) {
	switch s {
	case "debug", "info", "warn", "error":
		return logrus.ParseLevel(s)
	}
	return 0, fmt.Errorf("unknown level %q (debug, info, warn, error)", s)
}

// newLogger returns a JSON logger writing to w with the redaction hook
// installed, so that no PEM private key, API key, PIN or bearer token is
// ever written. When w is a command's stderr (a *stderrSink), the sink
// switches to JSON for the rest of the command once the first line is
// written.
func newLogger(w io.Writer, level string) *logrus.Entry {
	if s, ok := w.(*stderrSink); ok {
		w = s.jsonWriter()
	}
	return newLoggerFormat(w, level, &logrus.JSONFormatter{})
}

// newTextLogger returns a logger of human-readable lines ("TIME LEVEL: MSG
// (key: value, …)") for client commands, with the redaction hook installed.
func newTextLogger(w io.Writer, level string) *logrus.Entry {
	return newLoggerFormat(w, level, humanFormatter{})
}

func newLoggerFormat(w io.Writer, level string, f logrus.Formatter) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(w)
	l.SetFormatter(f)
	lv, err := parseLogLevel(level)
	if err != nil {
		lv = logrus.InfoLevel
	}
	l.SetLevel(lv)
	addRedaction(l)
	return logrus.NewEntry(l).WithField("service", "atr")
}

// humanFormatter writes one line per entry: time, level, message and the
// fields in order of their names ("service" and "component" left out).
type humanFormatter struct{}

func (humanFormatter) Format(e *logrus.Entry) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s: %s", e.Time.UTC().Format(time.RFC3339), e.Level, e.Message)
	keys := make([]string, 0, len(e.Data))
	for k := range e.Data {
		if k != "service" && k != "component" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for i, k := range keys {
		sep := ", "
		if i == 0 {
			sep = " ("
		}
		fmt.Fprintf(&b, "%s%s: %v", sep, k, e.Data[k])
	}
	if len(keys) > 0 {
		b.WriteByte(')')
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}

// stderrSink is a command's stderr. Human text and JSON log lines never
// interleave on it: text passes through until a JSON logger (newLogger) has
// written a line; from then on each later line of text (a message printed
// with fmt, a hook's output, the command's final error) is written as a JSON
// log line too. It is safe for concurrent use.
type stderrSink struct {
	mu      sync.Mutex
	w       io.Writer
	json    bool           // a JSON log line has been written
	midLine bool           // text mode: the last text did not end its line
	partial []byte         // JSON mode: text after the last newline
	text    *logrus.Logger // JSON mode: writes text lines as log lines
}

func newStderrSink(w io.Writer) *stderrSink { return &stderrSink{w: w} }

// Write writes human text.
func (s *stderrSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.json {
		if len(p) > 0 {
			s.midLine = p[len(p)-1] != '\n'
		}
		return s.w.Write(p)
	}
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		s.textLine(string(s.partial[:i]), logrus.InfoLevel, nil)
		s.partial = s.partial[i+1:]
	}
	return len(p), nil
}

// textLine writes one line of text as a JSON log line; s.mu is held.
func (s *stderrSink) textLine(line string, level logrus.Level, fields logrus.Fields) {
	line = strings.TrimRight(line, "\r")
	if strings.TrimSpace(line) == "" {
		return
	}
	if s.text == nil {
		s.text = newLoggerFormat(s.w, "debug", &logrus.JSONFormatter{}).Logger
	}
	s.text.WithField("service", "atr").WithFields(fields).Log(level, line)
}

type sinkJSONWriter struct{ s *stderrSink }

func (j sinkJSONWriter) Write(p []byte) (int, error) {
	j.s.mu.Lock()
	defer j.s.mu.Unlock()
	if !j.s.json {
		j.s.json = true
		if j.s.midLine {
			j.s.w.Write([]byte{'\n'})
		}
	}
	return j.s.w.Write(p)
}

// jsonWriter is where a JSON logger writes.
func (s *stderrSink) jsonWriter() io.Writer { return sinkJSONWriter{s} }

// flush writes text left without a final newline.
func (s *stderrSink) flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.json && len(s.partial) > 0 {
		s.textLine(string(s.partial), logrus.InfoLevel, nil)
		s.partial = nil
	}
}

// fail reports a command's final error: human text, or, once JSON log lines
// were written, one JSON line (level error) naming the command and the exit
// status.
func (s *stderrSink) fail(command string, err error, status int, human string) {
	s.flush()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.json {
		io.WriteString(s.w, human)
		return
	}
	s.textLine("atr "+command+": "+err.Error(), logrus.ErrorLevel, logrus.Fields{"command": command, "exit_status": status})
}
