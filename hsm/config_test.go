package hsm

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadPIN(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	writeMode := func(name string, mode os.FileMode) string {
		p := write(name, "1234\n")
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, file, env, want, wantErr string
	}{
		{name: "world-readable file refused", file: writeMode("m1", 0o644), wantErr: "must not be readable by others"},
		{name: "group-writable file refused", file: writeMode("m2", 0o660), wantErr: "must not be readable by others"},
		{name: "group-readable file allowed", file: writeMode("m3", 0o640), want: "1234"},
		{name: "owner-only file allowed", file: writeMode("m4", 0o400), want: "1234"},
		{name: "file", file: write("a", "1234\n"), want: "1234"},
		{name: "file crlf", file: write("b", "1234\r\n"), want: "1234"},
		{name: "file no newline", file: write("c", "s3cret"), want: "s3cret"},
		{name: "only one newline trimmed", file: write("d", "12\n\n"), wantErr: "control characters"},
		{name: "file wins over env", file: write("e", "fromfile\n"), env: "fromenv", want: "fromfile"},
		{name: "env", env: "fromenv", want: "fromenv"},
		{name: "empty file", file: write("f", "\n"), wantErr: "is empty"},
		{name: "missing file", file: filepath.Join(dir, "nope"), env: "x", wantErr: "reading PIN file"},
		{name: "nothing", wantErr: "no PIN configured"},
		{name: "huge file", file: write("g", strings.Repeat("9", 2000)), wantErr: "larger than"},
		{name: "control char in env", env: "12\x0034", wantErr: "control characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadPIN(tt.file, tt.env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ReadPIN = %q, %v; want error containing %q", got, err, tt.wantErr)
				}
				for _, secret := range []string{"1234", "s3cret", "fromenv", "fromfile", "999999"} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("error %q contains PIN material", err)
					}
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ReadPIN = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Module: "/m.so", TokenLabel: "t", PIN: "1"}
	tests := []struct {
		name    string
		mut     func(*Config)
		wantErr string
	}{
		{"ok", func(*Config) {}, ""},
		{"by serial", func(c *Config) { c.TokenLabel, c.TokenSerial = "", "s" }, ""},
		{"no module", func(c *Config) { c.Module = "" }, "module"},
		{"no token", func(c *Config) { c.TokenLabel = "" }, "label or serial is required"},
		{"both", func(c *Config) { c.TokenSerial = "s" }, "not both"},
		{"no pin", func(c *Config) { c.PIN = "" }, "PIN is required"},
		{"one session", func(c *Config) { c.MaxSessions = 1 }, "MaxSessions"},
		{"negative timeout", func(c *Config) { c.PoolWaitTimeout = -time.Second }, "PoolWaitTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mut(&c)
			err := c.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v; want error containing %q", err, tt.wantErr)
			}
		})
	}
	d := ok.withDefaults()
	if d.MaxSessions != 8 || d.PoolWaitTimeout != 5*time.Second {
		t.Errorf("defaults = %d, %s; want 8, 5s", d.MaxSessions, d.PoolWaitTimeout)
	}
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmt.Sprintf(f, Config{PIN: "hunter2"}); strings.Contains(s, "hunter2") {
			t.Errorf("Sprintf(%q) = %s: contains the PIN", f, s)
		}
	}
}
