package api

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/idempotency"
	"github.com/mmconnect/mmconnect/internal/session"
	"github.com/mmconnect/mmconnect/internal/webhook"
)

// Problem is an RFC 9457 problem details object with mmconnect's stable
// code, the request id to quote in a support request, and field problems.
type Problem struct {
	Type      string         `json:"type"`
	Title     string         `json:"title"`
	Status    int            `json:"status"`
	Detail    string         `json:"detail"`
	Code      string         `json:"code"`
	RequestID string         `json:"request_id"`
	Errors    []fieldProblem `json:"errors,omitempty"`
}

type fieldProblem struct {
	Field   string `json:"field"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// requestError is a problem the transport itself finds in a request.
type requestError struct {
	status int
	code   string
	detail string
}

func (e *requestError) Error() string { return e.code + ": " + e.detail }

func invalidRequest(detail string) error {
	return &requestError{http.StatusBadRequest, "invalid_request", detail}
}

// upstreamStatus is the HTTP status for each upstream problem code.
var upstreamStatus = map[string]int{
	connection.CodeTokenRejected:       http.StatusUnprocessableEntity,
	connection.CodeNotMattermost:       http.StatusUnprocessableEntity,
	connection.CodeHostNotFound:        http.StatusUnprocessableEntity,
	connection.CodeHostNotAllowed:      http.StatusUnprocessableEntity,
	connection.CodeRedirectNotAllowed:  http.StatusUnprocessableEntity,
	connection.CodeUpstreamUnreachable: http.StatusBadGateway,
	connection.CodeUpstreamTLS:         http.StatusBadGateway,
	connection.CodeUpstreamError:       http.StatusBadGateway,
	connection.CodeUpstreamRateLimited: http.StatusTooManyRequests,
	connection.CodeUpstreamTimeout:     http.StatusGatewayTimeout,
}

// problemFor is the one table from an error to what the client sees. Any
// error it does not know is an internal error, shown without detail.
func problemFor(err error) (p Problem, retryAfter string, internal bool) {
	var (
		re *requestError
		ve *connection.ValidationError
		ue *connection.UpstreamError
		he *echo.HTTPError
		ok = func(status int, code, detail string) Problem {
			return Problem{Status: status, Code: code, Detail: detail}
		}
		res Problem
	)
	var fe *forbiddenError
	var rl *rateLimitedError
	switch {
	case errors.As(err, &rl):
		res = ok(http.StatusTooManyRequests, "rate_limited",
			fmt.Sprintf("Too many connects and checks from %s (at most %s). Try again in %s seconds.", rl.who, rl.limit, rl.retryAfterSeconds()))
		retryAfter = rl.retryAfterSeconds()
	case errors.Is(err, errUnauthenticated):
		res = ok(http.StatusUnauthorized, "unauthorized", "Send a valid API key or connect session token as Authorization: Bearer <token>.")
	case errors.Is(err, session.ErrExpired):
		res = ok(http.StatusUnauthorized, "session_expired", "This connect session has expired. Start again from the app.")
	case errors.As(err, &fe):
		res = ok(http.StatusForbidden, "forbidden", fe.why)
	case errors.As(err, &re):
		res = ok(re.status, re.code, re.detail)
	case errors.As(err, &ve):
		res = ok(http.StatusUnprocessableEntity, "validation_failed", "The request has invalid fields; see errors.")
		for _, f := range ve.Fields {
			res.Errors = append(res.Errors, fieldProblem(f))
		}
	case errors.As(err, &ue):
		status, known := upstreamStatus[ue.Code]
		if !known {
			status = http.StatusBadGateway
		}
		res = ok(status, ue.Code, ue.Message)
		if ue.RetryAfter > 0 {
			retryAfter = strconv.Itoa(int((ue.RetryAfter + 999_999_999) / 1_000_000_000))
		}
	case errors.Is(err, webhook.ErrNotFound):
		res = ok(http.StatusNotFound, "not_found", "No webhook delivery has this id.")
	case errors.Is(err, webhook.ErrNotFailed):
		res = ok(http.StatusConflict, "delivery_not_failed", "Only a delivery that failed for good can be retried; this one is pending or delivered.")
	case errors.Is(err, webhook.ErrDisabled):
		res = ok(http.StatusConflict, "webhooks_disabled", "Webhooks are not configured: set MMCONNECT_WEBHOOK_URL and MMCONNECT_WEBHOOK_SECRET.")
	case errors.Is(err, session.ErrNotFound):
		res = ok(http.StatusNotFound, "not_found", "No connect session has this id.")
	case errors.Is(err, connection.ErrNotFound):
		res = ok(http.StatusNotFound, "not_found", "No connection has this id.")
	case errors.Is(err, connection.ErrRevoked):
		res = ok(http.StatusConflict, "connection_revoked", "This connection was revoked; its token is gone. Connect again to get a new one.")
	case errors.Is(err, idempotency.ErrReused):
		res = ok(http.StatusUnprocessableEntity, "idempotency_key_reused",
			"This Idempotency-Key was used with another request body. Use a new key for a new request.")
	case errors.Is(err, idempotency.ErrInUse):
		res = ok(http.StatusConflict, "idempotency_key_in_use",
			"A request with this Idempotency-Key is still being answered. Retry once it has finished.")
		retryAfter = "1"
	case errors.Is(err, connection.ErrTooManyConnections):
		res = ok(http.StatusUnprocessableEntity, "too_many_connections",
			"This user already has as many Mattermost connections as allowed. Revoke one before connecting another account (reconnecting an account that is already connected always works).")
	case errors.Is(err, connection.ErrSealingKeyMissing):
		// Ours to fix, so logged (the error names the key id), but worth its
		// own code: the operator lost or did not configure a key.
		res = ok(http.StatusInternalServerError, "sealing_key_missing",
			"This connection's token was sealed with an encryption key this service does not have; its operator must restore the key. Quote the request id.")
		res.Type = "urn:mmconnect:problem:" + res.Code
		res.Title = http.StatusText(res.Status)
		return res, "", true
	case errors.Is(err, connection.ErrUnavailable):
		res = ok(http.StatusServiceUnavailable, "database_unavailable", "The database is busy or unreachable. Nothing was changed; try again shortly.")
		retryAfter = "1"
	case errors.Is(err, connection.ErrConflict):
		res = ok(http.StatusConflict, "conflict", "The connection changed while this request ran. Try again.")
	case errors.Is(err, connection.ErrBadCursor):
		res = ok(http.StatusBadRequest, "invalid_request", "cursor is not one this service issued; use next_cursor from a previous page.")
	case errors.As(err, &he):
		switch he.Code {
		case http.StatusNotFound:
			res = ok(http.StatusNotFound, "not_found", "There is nothing at this path.")
		case http.StatusMethodNotAllowed:
			res = ok(http.StatusMethodNotAllowed, "method_not_allowed", "This path does not accept this method; see the Allow header.")
		case http.StatusRequestEntityTooLarge:
			res = ok(http.StatusRequestEntityTooLarge, "payload_too_large", "The request body is larger than 64 KiB.")
		case http.StatusUnsupportedMediaType:
			res = ok(http.StatusUnsupportedMediaType, "unsupported_media_type", "Send the body as application/json.")
		case http.StatusBadRequest:
			res = ok(http.StatusBadRequest, "invalid_request", "The request is malformed.")
		default:
			return internalProblem(), "", true
		}
	default:
		return internalProblem(), "", true
	}
	res.Type = "urn:mmconnect:problem:" + res.Code
	res.Title = http.StatusText(res.Status)
	return res, retryAfter, false
}

func internalProblem() Problem {
	return Problem{
		Type:   "urn:mmconnect:problem:internal",
		Title:  http.StatusText(http.StatusInternalServerError),
		Status: http.StatusInternalServerError,
		Code:   "internal",
		Detail: "Something went wrong on our side. Quote the request id if you report it.",
	}
}

// errorHandler is Echo's HTTPErrorHandler: every failure leaves through it.
func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		p, retryAfter, internal := problemFor(err)
		p.RequestID = requestID(c)
		if internal {
			log.Error("internal error", "request_id", p.RequestID, "method", c.Request().Method, "route", routeOf(c), "code", p.Code, "err", err)
		}
		if retryAfter != "" {
			c.Response().Header().Set("Retry-After", retryAfter)
		}
		if p.Status == http.StatusUnauthorized {
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="mmconnect"`)
		}
		c.Response().Header().Set(echo.HeaderContentType, "application/problem+json")
		c.Response().WriteHeader(p.Status)
		if c.Request().Method == http.MethodHead {
			return
		}
		if err := writeJSON(c.Response(), p); err != nil {
			log.Warn("write problem", "request_id", p.RequestID, "err", err)
		}
	}
}
