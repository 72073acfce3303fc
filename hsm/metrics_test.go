package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agent-trust-registry/atr/hsm"
	"github.com/agent-trust-registry/atr/hsm/hsmtest"
)

type failingSigner struct{ crypto.Signer }

func (failingSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("token gone")
}

// TestMetrics: every signature through Metrics.Signer is timed under its
// role, every failure counted; the health gauge follows Healthy.
func TestMetrics(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	m := hsm.NewMetrics()
	ok, bad := m.Signer("issuing", key), m.Signer("log", failingSigner{key})
	digest := sha256.Sum256([]byte("x"))
	for range 3 {
		if _, err := ok.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bad.Sign(rand.Reader, digest[:], crypto.SHA256); err == nil {
		t.Fatal("the failing signer signed")
	}
	if ok.Public() == nil {
		t.Error("the wrapped signer lost its public key")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collectors()...)
	var healthy error
	reg.MustRegister(hsm.HealthGauge(func(context.Context) error { return healthy }))
	gather := func() map[string]float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, mf := range mfs {
			for _, mm := range mf.GetMetric() {
				name := mf.GetName()
				for _, l := range mm.GetLabel() {
					name += "," + l.GetName() + "=" + l.GetValue()
				}
				switch {
				case mm.GetCounter() != nil:
					out[name] = mm.GetCounter().GetValue()
				case mm.GetGauge() != nil:
					out[name] = mm.GetGauge().GetValue()
				case mm.GetHistogram() != nil:
					out[name] = float64(mm.GetHistogram().GetSampleCount())
				}
			}
		}
		return out
	}
	got := gather()
	for name, want := range map[string]float64{
		"atr_hsm_operation_duration_seconds,key=issuing,op=sign": 3,
		"atr_hsm_operation_duration_seconds,key=log,op=sign":     1,
		"atr_hsm_errors_total,key=log,op=sign":                   1,
		"atr_token_healthy":                                      1,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v (all: %v)", name, got[name], want, got)
		}
	}
	if v := got["atr_hsm_errors_total,key=issuing,op=sign"]; v != 0 {
		t.Errorf("%v errors counted for the issuing key, which never failed", v)
	}
	healthy = errors.New("recovering")
	if v := gather()["atr_token_healthy"]; v != 0 {
		t.Errorf("gauge of a recovering token = %v, want 0", v)
	}
}

// TestMetricsSignerKeepsCheckMark: ca.Issuer.Sign skips its own
// verification only for a signer that checks its signatures itself; the
// metrics wrapper of a token signer must keep that mark (else every
// issuance verifies twice), and must not give it to any other signer.
func TestMetricsSignerKeepsCheckMark(t *testing.T) {
	tok := hsmtest.Open(t, hsmtest.NewToken(t, "atr-mark"))
	s, err := tok.GenerateKey(context.Background(), "k", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	soft, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	type checker interface{ ChecksSignatures() }
	m := hsm.NewMetrics()
	if _, ok := m.Signer("issuing", s).(checker); !ok {
		t.Error("the wrapped token signer lost its ChecksSignatures mark")
	}
	if _, ok := m.Signer("issuing", soft).(checker); ok {
		t.Error("a software key's wrapper claims to check its signatures")
	}
	// The log's Ed25519 key checks its signatures too (signIn), so the
	// note signer need not verify a checkpoint's signature again.
	ed, err := tok.GenerateEd25519Key(context.Background(), "log-ed25519")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Signer("log", ed).(checker); !ok {
		t.Error("the wrapped Ed25519 token signer lacks the ChecksSignatures mark")
	}
	digest := sha256.Sum256([]byte("x"))
	sig, err := m.Signer("issuing", s).Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), digest[:], sig) {
		t.Errorf("signature through the wrapper: %v", err)
	}
}
