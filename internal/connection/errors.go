package connection

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors of the domain. The api package maps each to one HTTP
// status and problem code; stores and clients wrap their causes around them.
var (
	// ErrNotFound: no connection has that id (or the caller may not see it).
	ErrNotFound = errors.New("connection not found")
	// ErrRevoked: the connection was revoked; its token is gone.
	ErrRevoked = errors.New("connection revoked")
	// ErrConflict: a uniqueness rule refused a write; the caller may retry.
	ErrConflict = errors.New("connection conflict")
	// ErrUnavailable: the database is busy, unreachable or full. Nothing was
	// written; the request may be retried.
	ErrUnavailable = errors.New("database unavailable")
	// ErrTooManyConnections: the end user has as many live connections as
	// allowed; a reconnect of one of them is always allowed.
	ErrTooManyConnections = errors.New("too many connections for this end user")
	// ErrSealingKeyMissing: a stored value was sealed with an encryption
	// key that is not configured; the operator must restore the key.
	ErrSealingKeyMissing = errors.New("sealed with an encryption key that is not configured")
)

// Field problem codes, stable parts of the API.
const (
	FieldRequired      = "required"
	FieldTooLong       = "too_long"
	FieldInvalidFormat = "invalid_format"
)

// FieldError is one problem with one input field. Message is written for the
// person who typed the value and never repeats a secret value.
type FieldError struct {
	Field   string
	Code    string
	Message string
}

// ValidationError lists every problem found in an input; nothing was done.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + ": " + f.Message
	}
	return "validation failed: " + strings.Join(parts, "; ")
}

// Upstream problem codes: what the check against Mattermost found.
const (
	CodeTokenRejected       = "token_rejected"
	CodeNotMattermost       = "not_mattermost"
	CodeHostNotFound        = "host_not_found"
	CodeHostNotAllowed      = "host_not_allowed"
	CodeRedirectNotAllowed  = "redirect_not_allowed"
	CodeUpstreamUnreachable = "upstream_unreachable"
	CodeUpstreamTLS         = "upstream_tls_error"
	CodeUpstreamError       = "upstream_error"
	CodeUpstreamRateLimited = "upstream_rate_limited"
	CodeUpstreamTimeout     = "upstream_timeout"
	// Codes of an upstream revoke.
	CodeNotPermitted = "not_permitted"
	CodeTokenUnknown = "token_unknown"
)

// CheckCodes are the codes a check against Mattermost can fail with (an
// UpstreamError's Code from Verifier.Verify), in the order the contract
// lists them (openapi.yaml's UpstreamCode); the api package maps each to
// its status, and metrics names each outcome before the first check, so
// a rate of any of them reads 0, not nothing. A fresh slice each call.
func CheckCodes() []string {
	return []string{CodeTokenRejected, CodeNotMattermost, CodeHostNotFound, CodeHostNotAllowed, CodeRedirectNotAllowed,
		CodeUpstreamUnreachable, CodeUpstreamTLS, CodeUpstreamError, CodeUpstreamRateLimited, CodeUpstreamTimeout}
}

// UpstreamError is a failed check against a Mattermost server. Code is one
// of the Code constants; Message tells the user what to check and never
// contains the token. RetryAfter is set when the server asked to wait.
type UpstreamError struct {
	Code       string
	Message    string
	RetryAfter time.Duration
	Err        error
}

// The outcomes of a check that are not an UpstreamError's Code: the
// token was accepted, or the check failed some other way.
const (
	OutcomeAccepted = "accepted"
	OutcomeError    = "error"
)

// CheckOutcomes are every name CheckOutcome gives: OutcomeAccepted, each
// of CheckCodes, and OutcomeError. A fresh slice each call.
func CheckOutcomes() []string {
	return append(append([]string{OutcomeAccepted}, CheckCodes()...), OutcomeError)
}

// CheckOutcome names how a check ended, for metrics and traces:
// OutcomeAccepted, an UpstreamError's Code, or OutcomeError (anything
// else, such as a store failure).
func CheckOutcome(err error) string {
	var ue *UpstreamError
	switch {
	case err == nil:
		return OutcomeAccepted
	case errors.As(err, &ue):
		return ue.Code
	}
	return OutcomeError
}

func (e *UpstreamError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("upstream %s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("upstream %s: %s", e.Code, e.Message)
}

func (e *UpstreamError) Unwrap() error { return e.Err }

// TokenRejected reports whether the server itself refused the token, the one
// failure that makes a stored connection invalid.
func (e *UpstreamError) TokenRejected() bool { return e.Code == CodeTokenRejected }
