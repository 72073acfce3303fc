package hsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Default values applied by Open to zero Config fields.
const (
	DefaultMaxSessions     = 8
	DefaultPoolWaitTimeout = 5 * time.Second
	// maxPINFileSize caps what ReadPIN reads; a PIN file is a few bytes.
	maxPINFileSize = 1024
)

// Config selects a PKCS#11 module, a token on it, and the user PIN.
// Its String and GoString methods never print the PIN.
type Config struct {
	Module          string        // path to the PKCS#11 module (.so)
	TokenLabel      string        // select the token by label ...
	TokenSerial     string        // ... or by serial (never by slot number)
	PIN             string        // user PIN (from ReadPIN; never from argv)
	MaxSessions     int           // default 8; at least 2 (crypto11 keeps one for the login)
	PoolWaitTimeout time.Duration // default 5s (crypto11's default waits forever)
}

// Validate checks cfg as Open will use it (after defaults).
func (c Config) Validate() error {
	if c.Module == "" {
		return errors.New("hsm: config: module path is required")
	}
	switch {
	case c.TokenLabel == "" && c.TokenSerial == "":
		return errors.New("hsm: config: token label or serial is required")
	case c.TokenLabel != "" && c.TokenSerial != "":
		return errors.New("hsm: config: select the token by label or by serial, not both")
	}
	if c.PIN == "" {
		return errors.New("hsm: config: PIN is required")
	}
	if c.MaxSessions < 0 || c.MaxSessions == 1 {
		return fmt.Errorf("hsm: config: MaxSessions %d: must be 0 (default) or at least 2", c.MaxSessions)
	}
	if c.PoolWaitTimeout < 0 {
		return errors.New("hsm: config: PoolWaitTimeout must not be negative")
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MaxSessions == 0 {
		c.MaxSessions = DefaultMaxSessions
	}
	if c.PoolWaitTimeout == 0 {
		c.PoolWaitTimeout = DefaultPoolWaitTimeout
	}
	return c
}

// tokenName names the token for messages and logs.
func (c Config) tokenName() string {
	if c.TokenLabel != "" {
		return fmt.Sprintf("token %q", c.TokenLabel)
	}
	return fmt.Sprintf("token serial %q", c.TokenSerial)
}

// String describes cfg with the PIN redacted.
func (c Config) String() string {
	pin := ""
	if c.PIN != "" {
		pin = "[REDACTED]"
	}
	return fmt.Sprintf("hsm.Config{Module:%q TokenLabel:%q TokenSerial:%q PIN:%s MaxSessions:%d PoolWaitTimeout:%s}",
		c.Module, c.TokenLabel, c.TokenSerial, pin, c.MaxSessions, c.PoolWaitTimeout)
}

// GoString is String, so that %#v does not print the PIN either.
func (c Config) GoString() string { return c.String() }

// ReadPIN returns the PIN from file when file is not empty (file wins), else
// env, which is the value of an environment variable such as ATR_PKCS11_PIN
// (not its name). One trailing newline ("\n" or "\r\n") is trimmed from the
// file. An empty PIN, a PIN with control characters or a file larger than
// 1 KiB is refused. Errors never contain the PIN or the file's content.
func ReadPIN(file, env string) (string, error) {
	var pin string
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("hsm: reading PIN file: %w", err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return "", fmt.Errorf("hsm: reading PIN file: %w", err)
		}
		// Any local user reading the PIN could log into the token; a
		// group-writable file could be swapped. Group read stays allowed
		// (secret mounts shared with a service group, e.g. 0440).
		if perm := fi.Mode().Perm(); perm&0o027 != 0 {
			return "", fmt.Errorf("hsm: PIN file %s has mode %#o: it must not be readable by others or writable by the group (chmod 600)", file, perm)
		}
		b, err := io.ReadAll(io.LimitReader(f, maxPINFileSize+1))
		if err != nil {
			return "", fmt.Errorf("hsm: reading PIN file %s: %w", file, err)
		}
		if len(b) > maxPINFileSize {
			return "", fmt.Errorf("hsm: PIN file %s: larger than %d bytes", file, maxPINFileSize)
		}
		b = bytes.TrimSuffix(b, []byte("\n"))
		b = bytes.TrimSuffix(b, []byte("\r"))
		pin = string(b)
		if pin == "" {
			return "", fmt.Errorf("hsm: PIN file %s is empty", file)
		}
	} else {
		pin = env
		if pin == "" {
			return "", errors.New("hsm: no PIN configured (set a PIN file or the PIN environment variable)")
		}
	}
	if strings.ContainsFunc(pin, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", errors.New("hsm: PIN contains control characters")
	}
	return pin, nil
}
