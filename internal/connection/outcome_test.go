package connection_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/mmconnect/mmconnect/internal/connection"
)

func TestCheckOutcome(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, "accepted"},
		{&connection.UpstreamError{Code: connection.CodeTokenRejected}, connection.CodeTokenRejected},
		{fmt.Errorf("verify: %w", &connection.UpstreamError{Code: connection.CodeUpstreamUnreachable}), connection.CodeUpstreamUnreachable},
		{errors.New("database is locked"), "error"},
	} {
		if got := connection.CheckOutcome(tc.err); got != tc.want {
			t.Errorf("CheckOutcome(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
