package hsmtest_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agent-trust-registry/atr/hsm"
	"github.com/agent-trust-registry/atr/hsm/hsmtest"
)

func TestMain(m *testing.M) { os.Exit(hsmtest.Main(m)) }

func TestNewToken(t *testing.T) {
	a := hsmtest.NewToken(t, "atr-issuing")
	b := hsmtest.NewToken(t, "atr-issuing")
	if a.TokenLabel == b.TokenLabel || !strings.HasPrefix(a.TokenLabel, "atr-issuing-") {
		t.Errorf("labels %q, %q; want distinct, prefixed atr-issuing-", a.TokenLabel, b.TokenLabel)
	}
	if a.PIN == "" || a.PIN == b.PIN || a.Module == "" {
		t.Errorf("configs %v, %v; want module and distinct PINs", a, b)
	}
	long := hsmtest.NewToken(t, strings.Repeat("x", 40))
	if len(long.TokenLabel) > 32 {
		t.Errorf("label %q longer than 32 bytes", long.TokenLabel)
	}
	// Tokens made after the module is loaded are usable at once, together.
	ta, tb := hsmtest.Open(t, a), hsmtest.Open(t, b)
	for _, tok := range []*hsm.Token{ta, tb, hsmtest.Open(t, long)} {
		if err := tok.Healthy(t.Context()); err != nil {
			t.Errorf("Healthy(%s) = %v", tok.Label(), err)
		}
	}
	dir := filepath.Dir(os.Getenv("SOFTHSM2_CONF"))
	for _, p := range []string{dir, filepath.Join(dir, "tokens")} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, %v; want 0700", p, fi.Mode().Perm(), err)
		}
	}
}

func TestNewTokenParallel(t *testing.T) {
	for i := range 4 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			tok := hsmtest.Open(t, hsmtest.NewToken(t, "par"))
			if _, err := tok.GenerateKey(t.Context(), "k", hsm.ECDSAP256); err != nil {
				t.Fatal(err)
			}
		})
	}
}
