package registry

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/lib/pq"
	"github.com/mattn/go-sqlite3"
)

// Errors callers may branch on with errors.Is. Every error returned by this
// package wraps at most one of them; driver errors never escape.
var (
	ErrNotFound        = errors.New("registry: not found")
	ErrConflict        = errors.New("registry: conflict")
	ErrForbidden       = errors.New("registry: forbidden")
	ErrUnauthenticated = errors.New("registry: unauthenticated")
	ErrInvalid         = errors.New("registry: invalid input")
	ErrUnavailable     = errors.New("registry: unavailable")
)

// invalidError wraps ErrInvalid together with the underlying cause (typically a
// *ca.PolicyError) so that callers can use errors.Is(err, ErrInvalid) and
// errors.As(err, &policyErr).
type invalidError struct {
	msg   string
	cause error
}

func (e *invalidError) Error() string {
	if e.cause == nil {
		return "registry: invalid input: " + e.msg
	}
	return "registry: invalid input: " + e.msg + ": " + e.cause.Error()
}

func (e *invalidError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrInvalid}
	}
	return []error{ErrInvalid, e.cause}
}

func invalid(msg string, cause error) error { return &invalidError{msg: msg, cause: cause} }

// prefix starts the text of every error this package returns.
const prefix = "registry: "

// bareError is an error of this package shown without its "registry: "
// prefix, for wrapping inside another error of the package.
type bareError struct{ err error }

func (e bareError) Error() string { return strings.TrimPrefix(e.err.Error(), prefix) }
func (e bareError) Unwrap() error { return e.err }

// bare returns err (a sentinel such as ErrConflict, or an error this package
// made) for wrapping with %w under a message that already starts with
// "registry: ", so the prefix appears once: fmt.Errorf("registry: rotate:
// %w", bare(ErrConflict)) reads "registry: rotate: conflict" and is still
// ErrConflict for errors.Is.
func bare(err error) error {
	if err == nil {
		return nil
	}
	return bareError{err}
}

// dbErr converts a database/driver error into one of the package sentinels or
// an opaque internal error. The driver's error value is never wrapped (only its
// text is kept), so callers cannot branch on driver types.
//
// An error of this package (one that already reads "registry: …") is wrapped
// as it is, with the prefix once: "registry: op: cause", not "registry: op:
// registry: cause".
func dbErr(op string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case strings.HasPrefix(err.Error(), prefix):
		return fmt.Errorf("registry: %s: %w", op, bare(err))
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrConflict), errors.Is(err, ErrForbidden),
		errors.Is(err, ErrUnauthenticated), errors.Is(err, ErrInvalid), errors.Is(err, ErrUnavailable):
		return fmt.Errorf("registry: %s: %w", op, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("registry: %s: %w", op, err)
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("registry: %s: %w", op, bare(ErrNotFound))
	case errors.Is(err, sql.ErrConnDone), errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrTxDone),
		// A connection cut under the driver: lib/pq returns the raw read error.
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return fmt.Errorf("registry: %s: %w: %v", op, bare(ErrUnavailable), err)
	}
	var se sqlite3.Error
	if errors.As(err, &se) {
		switch {
		case se.ExtendedCode == sqlite3.ErrConstraintUnique || se.ExtendedCode == sqlite3.ErrConstraintPrimaryKey:
			return fmt.Errorf("registry: %s: %w", op, bare(ErrConflict))
		case se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked || se.Code == sqlite3.ErrCantOpen ||
			se.Code == sqlite3.ErrIoErr || se.Code == sqlite3.ErrFull || se.Code == sqlite3.ErrReadonly:
			return fmt.Errorf("registry: %s: %w: %v", op, bare(ErrUnavailable), se.Error())
		}
		return fmt.Errorf("registry: %s: %v", op, se.Error())
	}
	var pe *pq.Error
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "23505":
			return fmt.Errorf("registry: %s: %w", op, bare(ErrConflict))
		case pe.Code == "40001" || pe.Code == "40P01": // serialization failure, deadlock
			return fmt.Errorf("registry: %s: %w: %s", op, bare(ErrConflict), pe.Code)
		case strings.HasPrefix(string(pe.Code), "08"), strings.HasPrefix(string(pe.Code), "57P"),
			strings.HasPrefix(string(pe.Code), "53"):
			return fmt.Errorf("registry: %s: %w: %s", op, bare(ErrUnavailable), pe.Code)
		}
		return fmt.Errorf("registry: %s: database error %s: %s", op, pe.Code, pe.Message)
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return fmt.Errorf("registry: %s: %w: %v", op, bare(ErrUnavailable), err)
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return fmt.Errorf("registry: %s: %w: %v", op, bare(ErrUnavailable), err)
	}
	if strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "bad connection") {
		return fmt.Errorf("registry: %s: %w: %v", op, bare(ErrUnavailable), err)
	}
	return fmt.Errorf("registry: %s: %v", op, err)
}

// wrap adds op to an error of this package, with the "registry: " prefix
// once: wrap("get agent", err) reads "registry: get agent: …". nil stays nil.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("registry: %s: %w", op, bare(err))
}
