package api

import (
	"maps"
	"slices"
	"testing"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// The error table gives each code a check can fail with
// (connection.CheckCodes, the contract's UpstreamCode), and nothing else,
// its own status: a code missing here would fall to 502 unnoticed.
func TestUpstreamStatusForEachCheckCode(t *testing.T) {
	got := slices.Sorted(maps.Keys(upstreamStatus))
	want := slices.Sorted(slices.Values(connection.CheckCodes()))
	if !slices.Equal(got, want) {
		t.Errorf("the error table's upstream codes = %v; connection.CheckCodes = %v", got, want)
	}
}
