package api

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"golang.org/x/crypto/ocsp"
)

// distributionPaths are the routes of the plain-http distribution listener: the
// revocation channels and the CA certificates, which relying parties fetch over http
// (RFC 5280 §4.2.1.13 and §4.2.2.1, RFC 5019 §5: a client must not need TLS, whose
// own certificate it would have to check first, to learn whether a certificate is
// revoked). Everything they serve is signed or public.
var distributionPaths = []string{
	"/v1/crl",
	"/v1/crl/{keyid}",
	"/v1/ocsp",
	"/v1/ocsp/{req:.+}",
	"/v1/ca/bundle",
}

// DistributionHandler returns the handler of the plain-http distribution listener. It
// serves only GET/HEAD /v1/crl, POST /v1/ocsp, GET/HEAD /v1/ocsp/{req} and GET/HEAD
// /v1/ca/bundle, through the same handlers, rate limits, request IDs, logs, metrics
// and security headers as Handler, but never sends Strict-Transport-Security (it is
// meaningless over http). Every other path is a 404.
func (s *Server) DistributionHandler() http.Handler { return s.distribution }

func (s *Server) distributionRoutes() *mux.Router {
	var table []route
	for _, rt := range s.routeTable() {
		if slices.Contains(distributionPaths, rt.path) {
			table = append(table, rt)
		}
	}
	return s.newRouter(table)
}

// ocspCaching sets the RFC 5019 §6.2 caching headers of a GET OCSP answer and reports
// whether the request's If-None-Match already names it (the caller then answers 304).
// Only a successful response with a nextUpdate in the future is cacheable: max-age
// runs until its nextUpdate, Last-Modified is its thisUpdate, Expires its nextUpdate
// and the ETag is the SHA-256 of the DER. Anything else keeps no-store.
func (s *Server) ocspCaching(w http.ResponseWriter, r *http.Request, der []byte) (notModified bool) {
	// The response is our own; its signature was checked when it was made.
	resp, err := ocsp.ParseResponse(der, nil)
	if err != nil || resp.NextUpdate.IsZero() {
		return false
	}
	maxAge := resp.NextUpdate.Sub(s.now()) / time.Second
	if maxAge <= 0 {
		return false
	}
	sum := sha256.Sum256(der)
	etag := `"` + hex.EncodeToString(sum[:]) + `"`
	h := w.Header()
	h.Set("Cache-Control", "public, max-age="+strconv.FormatInt(int64(maxAge), 10)+", no-transform, must-revalidate")
	h.Set("ETag", etag)
	h.Set("Last-Modified", resp.ThisUpdate.UTC().Format(http.TimeFormat))
	h.Set("Expires", resp.NextUpdate.UTC().Format(http.TimeFormat))
	return etagMatches(r.Header.Get("If-None-Match"), etag)
}

// etagMatches applies If-None-Match's weak comparison (RFC 9110 §13.1.2) of a
// comma-separated list, or "*", to etag.
func etagMatches(inm, etag string) bool {
	for _, t := range strings.Split(inm, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}
