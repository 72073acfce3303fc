package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func testApp(env map[string]string) (*app, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	return &app{stdout: &out, stderr: &errb, lookupEnv: envFrom(env), now: time.Now, argv: []string{"atr"}}, &out, &errb
}

func TestHelpHasExample(t *testing.T) {
	cmds := [][]string{
		{"serve"}, {"ceremony"}, {"ceremony", "root"}, {"ceremony", "intermediate"},
		{"ceremony", "rotate-intermediate"}, {"ceremony", "log-key"}, {"ceremony", "show"},
		{"apikey"}, {"apikey", "create"}, {"migrate"}, {"healthcheck"}, {"version"},
	}
	for _, c := range cmds {
		name := strings.Join(c, " ")
		t.Run(name, func(t *testing.T) {
			a, out, errb := testApp(nil)
			if code := a.run(context.Background(), append(c, "--help")); code != 0 {
				t.Fatalf("atr %s --help: exit %d, want 0; stderr: %s", name, code, errb)
			}
			got := out.String()
			if !strings.Contains(got, "Example:") {
				t.Fatalf("atr %s --help has no Example section:\n%s", name, got)
			}
			example := got[strings.Index(got, "Example:"):]
			if !strings.Contains(example, "atr "+c[0]) {
				t.Errorf("atr %s --help: the example does not run 'atr %s':\n%s", name, c[0], example)
			}
		})
	}
	t.Run("top level", func(t *testing.T) {
		a, out, _ := testApp(nil)
		if code := a.run(context.Background(), []string{"--help"}); code != 0 {
			t.Fatalf("exit %d", code)
		}
		if !strings.Contains(out.String(), "Example:") {
			t.Errorf("atr --help has no example:\n%s", out)
		}
	})
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"nonsense"}, 2},
		{[]string{"ceremony"}, 2},
		{[]string{"ceremony", "nonsense"}, 2},
		{[]string{"serve", "--no-such-flag"}, 2},
		{[]string{"serve", "stray"}, 2},
		{[]string{"version"}, 0},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			a, _, errb := testApp(nil)
			if got := a.run(context.Background(), tt.args); got != tt.code {
				t.Errorf("exit %d, want %d; stderr: %s", got, tt.code, errb)
			}
		})
	}
}

func TestInvalidConfigFailsAtStartup(t *testing.T) {
	a, _, errb := testApp(map[string]string{"ATR_LISTEN": "nonsense", "ATR_TRUST_DOMAIN": "UPPER"})
	if got := a.run(context.Background(), []string{"serve"}); got != 1 {
		t.Fatalf("exit %d, want 1", got)
	}
	for _, want := range []string{"ATR_LISTEN", "ATR_TRUST_DOMAIN"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr %q does not mention %s", errb, want)
		}
	}
}
