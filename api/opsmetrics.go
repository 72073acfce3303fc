package api

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"regexp"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agent-trust-registry/atr/registry"
)

// muxVarPattern matches a gorilla/mux variable with a regexp, "{req:.+}".
var muxVarPattern = regexp.MustCompile(`\{([A-Za-z0-9_]+):[^}]*\}`)

// routeLabel turns a mux path template into the route label of logs and metrics:
// "/v1/ocsp/{req:.+}" becomes "/v1/ocsp/{req}", the spelling of the OpenAPI document.
func routeLabel(tpl string) string { return muxVarPattern.ReplaceAllString(tpl, "{$1}") }

// Descriptions of the families an operator alerts on. The timestamps are Unix seconds,
// so an alert reads `atr_ca_certificate_not_after_timestamp_seconds - time() < 30*86400`.
var (
	caNotAfterDesc = prometheus.NewDesc("atr_ca_certificate_not_after_timestamp_seconds",
		"NotAfter of each CA certificate in the served bundle (Unix seconds), by role (root or intermediate), subject and serial.",
		[]string{"role", "subject", "serial"}, nil)
	crlNextUpdateDesc = prometheus.NewDesc("atr_crl_next_update_timestamp_seconds",
		"nextUpdate of the CRL stored for /v1/crl (Unix seconds): the one served, or, when a revocation came after it, the one the next fetch replaces (a scrape makes no CRL); absent while no CRL can be produced.",
		nil, nil)
	caCRLNextUpdateDesc = prometheus.NewDesc("atr_ca_crl_next_update_timestamp_seconds",
		"nextUpdate of each CA's CRL stored for /v1/crl/{key id} (Unix seconds; a scrape makes no CRL), by the CA's subject key identifier and kind: issuer (a CRL the registry signs, current or earlier intermediate) or root (signed in the root-crl ceremony; re-sign it before this).",
		[]string{"key_id", "kind"}, nil)
)

// crlLister is implemented by a Revocation that serves several CRLs
// (*registry.Registry): the key ids of its issuing CAs and of the roots that
// published one.
type crlLister interface {
	CRLKeyIDs() (issuers, roots []string)
}

// crlNextUpdater is implemented by a Revocation that can tell a CRL's
// nextUpdate without making a new CRL (*registry.Registry).
type crlNextUpdater interface {
	CRLNextUpdate(ctx context.Context, keyID string) (time.Time, error)
}

var _ crlNextUpdater = (*registry.Registry)(nil)

// crlNextUpdate is the nextUpdate of the CRL of keyID ("" for /v1/crl). A
// scrape must not make a CRL: under a rotating fleet the stored one is
// nearly always stale, and making one reads and signs the whole list.
func (c opsCollector) crlNextUpdate(ctx context.Context, keyID string) (time.Time, error) {
	if u, ok := c.s.deps.Revocation.(crlNextUpdater); ok {
		return u.CRLNextUpdate(ctx, keyID)
	}
	var (
		next time.Time
		err  error
	)
	if keyID == "" {
		_, next, err = c.s.deps.Revocation.CRL(ctx)
	} else {
		_, next, err = c.s.deps.Revocation.CRLOf(ctx, keyID)
	}
	return next, err
}

// opsCollector reads the CA bundle and the stored CRLs at scrape time.
type opsCollector struct{ s *Server }

func (c opsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- caNotAfterDesc
	ch <- crlNextUpdateDesc
	ch <- caCRLNextUpdateDesc
}

func (c opsCollector) Collect(ch chan<- prometheus.Metric) {
	rest := c.s.deps.Lifecycle.Bundle()
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil || b.Type != "CERTIFICATE" {
			continue
		}
		role := "intermediate"
		if cert.CheckSignatureFrom(cert) == nil {
			role = "root"
		}
		ch <- prometheus.MustNewConstMetric(caNotAfterDesc, prometheus.GaugeValue, float64(cert.NotAfter.Unix()),
			role, cert.Subject.String(), hex.EncodeToString(cert.SerialNumber.Bytes()))
	}
	if c.s.deps.Revocation == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if next, err := c.crlNextUpdate(ctx, ""); err == nil {
		ch <- prometheus.MustNewConstMetric(crlNextUpdateDesc, prometheus.GaugeValue, float64(next.Unix()))
	} else {
		c.s.log.WithError(err).Warn("metrics: reading the current CRL")
	}
	l, ok := c.s.deps.Revocation.(crlLister)
	if !ok {
		return
	}
	issuers, roots := l.CRLKeyIDs()
	for kind, ids := range map[string][]string{"issuer": issuers, "root": roots} {
		for _, id := range ids {
			if next, err := c.crlNextUpdate(ctx, id); err == nil {
				ch <- prometheus.MustNewConstMetric(caCRLNextUpdateDesc, prometheus.GaugeValue, float64(next.Unix()), id, kind)
			} else {
				c.s.log.WithError(err).WithField("key_id", id).Warn("metrics: reading a CRL")
			}
		}
	}
}

// buildInfo is atr_build_info: constant 1, labelled with what the binary was built from.
func buildInfo() prometheus.Collector {
	version, revision, goVersion := "(devel)", "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, kv := range bi.Settings {
			if kv.Key == "vcs.revision" {
				revision = kv.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "atr_build_info",
		Help:        "Constant 1, labelled with the version, VCS revision and Go version atr was built from.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goVersion},
	})
	g.Set(1)
	return g
}

// registerOpsMetrics adds atr_build_info and the expiry gauges to the Server's registry.
func (s *Server) registerOpsMetrics() error {
	for _, c := range []prometheus.Collector{buildInfo(), opsCollector{s}} {
		if err := s.metrics.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
