package main

import (
	"fmt"
	"io"

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
// ever written.
func newLogger(w io.Writer, level string) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(w)
	l.SetFormatter(&logrus.JSONFormatter{})
	lv, err := parseLogLevel(level)
	if err != nil {
		lv = logrus.InfoLevel
	}
	l.SetLevel(lv)
	addRedaction(l)
	return logrus.NewEntry(l).WithField("service", "atr")
}
