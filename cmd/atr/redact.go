package main

import (
	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/registry/redact"
)

// addRedaction installs registry/redact's hook: no PEM private key, API key,
// PIN or bearer token reaches the log.
func addRedaction(l *logrus.Logger) { l.AddHook(redact.Hook{}) }
