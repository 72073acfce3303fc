package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/api/ratelimit"
	"github.com/agent-trust-registry/atr/registry"
)

// Stable error codes of the REST API. Clients branch on these; they never change meaning.
const (
	CodeInvalidRequest       = "invalid_request"
	CodeRequestTooLarge      = "request_too_large"
	CodeUnsupportedMediaType = "unsupported_media_type"
	CodeUnauthenticated      = "unauthenticated"
	CodeForbidden            = "forbidden"
	CodeNotFound             = "not_found"
	CodeMethodNotAllowed     = "method_not_allowed"
	CodeConflict             = "conflict"
	CodeRateLimited          = "rate_limited"
	CodeInternal             = "internal_error"
	CodeUnavailable          = "unavailable"
	CodeNotImplemented       = "not_implemented"
)

// apiError is an error whose status, code and message are safe to show to a client.
// Message is always a fixed string chosen by this package, never text derived from an
// underlying error.
type apiError struct {
	Status  int
	Code    string
	Message string
	cause   error // logged, never shown
}

func (e *apiError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("api: %s: %s: %v", e.Code, e.Message, e.cause)
	}
	return fmt.Sprintf("api: %s: %s", e.Code, e.Message)
}

func (e *apiError) Unwrap() error { return e.cause }

func errInvalid(msg string) error {
	return &apiError{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Message: msg}
}

// rateLimitedError carries the limiter's decision so that the error writer can set
// Retry-After and RateLimit-* headers.
type rateLimitedError struct {
	class string
	res   ratelimit.Result
}

func (e *rateLimitedError) Error() string {
	return fmt.Sprintf("api: rate limited (%s), retry after %s", e.class, e.res.RetryAfter)
}

// classify maps any error to the status, code and message the client sees.
func classify(err error) (status int, code, msg string) {
	var ae *apiError
	var rl *rateLimitedError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
		return ae.Status, ae.Code, ae.Message
	case errors.As(err, &rl):
		return http.StatusTooManyRequests, CodeRateLimited, "too many requests; retry later"
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, CodeRequestTooLarge, "request body too large"
	case errors.Is(err, registry.ErrInvalid):
		return http.StatusBadRequest, CodeInvalidRequest, "the request was refused: invalid input"
	case errors.Is(err, registry.ErrUnauthenticated):
		return http.StatusUnauthorized, CodeUnauthenticated, "authentication required"
	case errors.Is(err, registry.ErrForbidden):
		return http.StatusForbidden, CodeForbidden, "not allowed"
	case errors.Is(err, registry.ErrNotFound):
		return http.StatusNotFound, CodeNotFound, "not found"
	case errors.Is(err, registry.ErrConflict):
		return http.StatusConflict, CodeConflict, "conflict with the current state"
	case errors.Is(err, registry.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, CodeUnavailable, "service temporarily unavailable"
	case errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, CodeUnavailable, "request canceled"
	}
	return http.StatusInternalServerError, CodeInternal, "internal error"
}

// writeError is the one place errors become responses: a stable code, a generic message
// and the request ID for the client; the full error, with the request ID, for the log.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code, msg := s.refused(w, r, err)
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="atr"`)
	}
	body := client.ErrorBody{Error: client.ErrorDetail{Code: code, Message: msg, RequestID: infoFrom(r.Context()).id}}
	writeJSONStatus(w, status, body)
}

// refused is what every error response shares, whatever its body (writeError,
// writeESTError): it classifies err, sets the rate-limit headers of a refusal,
// counts it and logs the full error with the request ID.
func (s *Server) refused(w http.ResponseWriter, r *http.Request, err error) (status int, code, msg string) {
	status, code, msg = classify(err)
	info := infoFrom(r.Context())
	var rl *rateLimitedError
	if errors.As(err, &rl) {
		setRateLimitHeaders(w.Header(), rl.res)
		retry := int(math.Ceil(rl.res.RetryAfter.Seconds()))
		if retry < 1 {
			retry = 1
		}
		w.Header().Set("Retry-After", strconv.Itoa(retry))
		s.metrics.rateLimited.WithLabelValues(rl.class).Inc()
	}
	entry := info.logger(s.log).WithFields(map[string]any{"status": status, "code": code, "error": err.Error()})
	switch {
	case status >= 500:
		entry.Error("request failed")
	case status == http.StatusTooManyRequests || status == http.StatusUnauthorized || status == http.StatusForbidden:
		entry.Warn("request refused")
	default:
		entry.Info("request refused")
	}
	return status, code, msg
}

// writeJSONStatus writes v as the JSON body with status.
func writeJSONStatus(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	writeJSONBytes(w, status, b, err)
}

// writeJSONBytes writes b, a JSON value encoded without error err, as the
// body with status.
func writeJSONBytes(w http.ResponseWriter, status int, b []byte, err error) {
	if err != nil {
		// Only our own types reach here; a failure is a programming error.
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal_error","message":"internal error","request_id":""}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func setRateLimitHeaders(h http.Header, res ratelimit.Result) {
	h.Set("RateLimit-Limit", strconv.Itoa(res.Limit.Burst))
	h.Set("RateLimit-Remaining", strconv.Itoa(max(res.Remaining, 0)))
	h.Set("RateLimit-Reset", strconv.Itoa(int(math.Ceil(max(res.ResetAfter, 0).Seconds()))))
	if res.Limit.Period > 0 {
		h.Set("RateLimit-Policy", fmt.Sprintf("%d;w=%d", res.Limit.Rate, int(res.Limit.Period/time.Second)))
	}
}
