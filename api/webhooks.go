package api

import (
	"bytes"
	"context"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/webhook"
)

// webhookBody is what a receiver gets: the event, its per-connection
// sequence and the connection as the API shows it (never the token).
type webhookBody struct {
	Type      string `json:"type"`
	Timestamp string `json:"timestamp"`
	Sequence  int64  `json:"sequence"`
	Data      any    `json:"data"`
}

// WebhookBody renders an event as a webhook receiver gets it; the
// connection in it is exactly what GET /connections/{id} would show.
func WebhookBody(ev connection.Event) ([]byte, error) {
	body := webhookBody{Type: string(ev.Type), Timestamp: formatTime(ev.At), Sequence: ev.Sequence, Data: struct{}{}}
	if ev.Type != connection.EventPing {
		body.Data = toConnectionResponse(ev.Connection)
	}
	var buf bytes.Buffer
	if err := writeJSON(&buf, body); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type deliveryResponse struct {
	ID                 string  `json:"id"`
	Type               string  `json:"type"`
	ConnectionID       *string `json:"connection_id"`
	Sequence           int64   `json:"sequence"`
	Status             string  `json:"status"`
	Attempts           int     `json:"attempts"`
	LastResponseStatus *int    `json:"last_response_status"`
	LastError          *string `json:"last_error"`
	LastAttemptAt      *string `json:"last_attempt_at"`
	NextAttemptAt      *string `json:"next_attempt_at"`
	CreatedAt          string  `json:"created_at"`
	SettledAt          *string `json:"settled_at"`
}

func toDeliveryResponse(d webhook.Delivery) deliveryResponse {
	r := deliveryResponse{
		ID:            d.Event.ID,
		Type:          string(d.Event.Type),
		Sequence:      d.Event.Sequence,
		Status:        string(d.Status),
		Attempts:      d.Attempts,
		LastAttemptAt: formatTimePtr(d.LastAttemptAt),
		CreatedAt:     formatTime(d.CreatedAt),
		SettledAt:     formatTimePtr(d.SettledAt),
	}
	if d.ConnectionID != "" {
		r.ConnectionID = &d.ConnectionID
	}
	if d.LastResponseStatus != 0 {
		r.LastResponseStatus = &d.LastResponseStatus
	}
	if d.LastError != "" {
		r.LastError = &d.LastError
	}
	if d.Status == webhook.StatusPending {
		r.NextAttemptAt = formatTimePtr(&d.NextAttemptAt)
	}
	return r
}

// webhooks is the deliveries service, or ErrDisabled when there is none.
func (s *Server) webhooks() (Webhooks, error) {
	if s.deps.Webhooks == nil {
		return nil, webhook.ErrDisabled
	}
	return s.deps.Webhooks, nil
}

func (s *Server) listDeliveries(c echo.Context) error {
	var q webhook.Query
	pp, err := listParams(c, "status", func(name, v string) (bool, error) {
		if name != "status" {
			return false, nil
		}
		st := webhook.Status(v)
		if !st.Valid() {
			return true, invalidRequest("status must be one of pending, failed, delivered.")
		}
		q.Status = &st
		return true, nil
	})
	if err != nil {
		return err
	}
	q.Limit, q.Cursor = pp.Limit, pp.Cursor
	wh, err := s.webhooks()
	if err != nil {
		return err
	}
	page, err := wh.List(c.Request().Context(), q)
	if err != nil {
		return err
	}
	return respondList(c, page.Deliveries, page.NextCursor, toDeliveryResponse)
}

func (s *Server) retryDelivery(c echo.Context) error {
	return s.queueDelivery(c, func(ctx context.Context, wh Webhooks) (webhook.Delivery, error) {
		return wh.Retry(ctx, c.Param("id"))
	})
}

func (s *Server) testWebhook(c echo.Context) error {
	return s.queueDelivery(c, func(ctx context.Context, wh Webhooks) (webhook.Delivery, error) {
		return wh.Ping(ctx)
	})
}

// queueDelivery answers 202 with a delivery that is now due.
func (s *Server) queueDelivery(c echo.Context, queue func(context.Context, Webhooks) (webhook.Delivery, error)) error {
	wh, err := s.webhooks()
	if err != nil {
		return err
	}
	d, err := queue(c.Request().Context(), wh)
	if err != nil {
		return err
	}
	return respond(c, http.StatusAccepted, toDeliveryResponse(d))
}
