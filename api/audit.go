package api

import (
	"context"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mmconnect/mmconnect/internal/audit"
)

// Audit is what the API needs of the audit trail.
type Audit interface {
	Record(ctx context.Context, e audit.Event) error
	List(ctx context.Context, q audit.Query) (audit.Page, error)
}

// audit records what the caller just did. A failure to record is logged,
// not sent to the caller, whose action has already happened.
func (s *Server) audit(c echo.Context, action, connectionID, detail string) {
	if s.deps.Audit == nil {
		return
	}
	e := s.auditWho(c)
	e.Action, e.ConnectionID, e.Detail = action, connectionID, detail
	if err := s.deps.Audit.Record(context.WithoutCancel(c.Request().Context()), *e); err != nil {
		s.deps.Logger.Error("record audit event", "request_id", requestID(c), "action", action, "err", err)
	}
}

// auditWho is who made the request, for the audit trail.
func (s *Server) auditWho(c echo.Context) *audit.Event {
	return &audit.Event{Actor: actorOf(c), ClientIP: c.RealIP(), RequestID: requestID(c)}
}

type auditEventResponse struct {
	ID           string  `json:"id"`
	At           string  `json:"at"`
	Actor        string  `json:"actor"`
	Action       string  `json:"action"`
	ConnectionID *string `json:"connection_id"`
	ClientIP     string  `json:"client_ip"`
	RequestID    string  `json:"request_id"`
	Detail       string  `json:"detail"`
}

func toAuditEventResponse(e audit.Event) auditEventResponse {
	r := auditEventResponse{ID: e.ID, At: formatTime(e.At), Actor: e.Actor, Action: e.Action,
		ClientIP: e.ClientIP, RequestID: e.RequestID, Detail: e.Detail}
	if e.ConnectionID != "" {
		id := e.ConnectionID
		r.ConnectionID = &id
	}
	return r
}

func (s *Server) listAuditEvents(c echo.Context) error {
	if s.deps.Audit == nil {
		return echo.ErrNotFound
	}
	var q audit.Query
	pp, err := listParams(c, "connection_id, actor, action, since", func(name, v string) (bool, error) {
		switch name {
		case "connection_id":
			q.ConnectionID = v
		case "actor":
			q.Actor = v
		case "action":
			q.Action = v
		case "since":
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return true, invalidRequest("since must be an RFC 3339 time, e.g. 2026-11-27T00:00:00Z.")
			}
			q.Since = &t
		default:
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	q.Limit, q.Cursor = pp.Limit, pp.Cursor
	page, err := s.deps.Audit.List(c.Request().Context(), q)
	if err != nil {
		return err
	}
	return respondList(c, page.Events, page.NextCursor, toAuditEventResponse)
}
