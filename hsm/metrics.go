package hsm

import (
	"context"
	"crypto"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts and times operations on the token
// (atr_hsm_operation_duration_seconds, atr_hsm_errors_total), by the role of
// the key. Register Collectors on a Prometheus registry.
type Metrics struct {
	latency *prometheus.HistogramVec // key, op
	errors  *prometheus.CounterVec   // key, op
}

// NewMetrics returns unregistered token metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "atr_hsm_operation_duration_seconds",
			Help:    "Latency of operations on the PKCS#11 token, by key and operation.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"key", "op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atr_hsm_errors_total",
			Help: "Failed operations on the PKCS#11 token, by key and operation.",
		}, []string{"key", "op"}),
	}
}

// Collectors are the metric families, to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.latency, m.errors}
}

// Signer wraps a token signer so that each signature is timed and each
// failure counted under the key's role ("issuing", "log").
// The wrapper of a signer with the ChecksSignatures mark (*Signer,
// *Ed25519Signer) keeps the mark; any other signer's wrapper has none.
func (m *Metrics) Signer(role string, s crypto.Signer) crypto.Signer {
	is := &instrumentedSigner{Signer: s, latency: m.latency.WithLabelValues(role, "sign"), errors: m.errors.WithLabelValues(role, "sign")}
	if _, ok := s.(interface{ ChecksSignatures() }); ok {
		return checkingSigner{is}
	}
	return is
}

// checkingSigner is an instrumentedSigner over a signer that checks its
// signatures.
type checkingSigner struct{ *instrumentedSigner }

func (checkingSigner) ChecksSignatures() {}

type instrumentedSigner struct {
	crypto.Signer
	latency prometheus.Observer
	errors  prometheus.Counter
}

func (s *instrumentedSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	start := time.Now()
	sig, err := s.Signer.Sign(r, digest, opts)
	s.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		s.errors.Inc()
	}
	return sig, err
}

// HealthGauge is atr_token_healthy: 1 while the token answers (Healthy) and
// 0 while it is being recovered (its signers fail closed meanwhile).
func HealthGauge(healthy func(ctx context.Context) error) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "atr_token_healthy",
		Help: "1 when the online PKCS#11 token is usable, 0 while it is unavailable.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if healthy(ctx) != nil {
			return 0
		}
		return 1
	})
}
