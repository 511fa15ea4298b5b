package outbound

import (
	"errors"
	"net/netip"
	"testing"
)

// The dialer's Control hook is the last check, on the address the socket is
// about to connect to, whatever resolved it.
func TestControlHookRefusesSpecialAddresses(t *testing.T) {
	g := newGuard([]netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}, nil, nil, 0)
	for addr, ok := range map[string]bool{
		"93.184.216.34:443":        true,
		"[2606:2800:220:1::1]:443": true,
		"10.9.1.1:443":             true,
		"10.8.1.1:443":             false,
		"127.0.0.1:443":            false,
		"169.254.169.254:80":       false,
		"[::1]:443":                false,
		"[::ffff:127.0.0.1]:443":   false,
		"[fe80::1%eth0]:443":       false,
		"255.255.255.255:443":      false,
		"[64:ff9b::7f00:1]:443":    false,
	} {
		err := g.control("tcp", addr, nil)
		var re *RefusedError
		if ok != (err == nil) || (!ok && !errors.As(err, &re)) {
			t.Errorf("control(%s) = %v, want allowed=%v", addr, err, ok)
		}
	}
}
