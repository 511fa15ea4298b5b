package main

import (
	"os"
	"testing"
)

// TestMain lets a test run this test binary as the real program (with
// MMCONNECT_TEST_RUN_MAIN=1), so it can be killed with SIGKILL like a
// crashed process.
func TestMain(m *testing.M) {
	if os.Getenv("MMCONNECT_TEST_RUN_MAIN") == "1" {
		os.Args = os.Args[:1] // serve; the test flags are not the program's
		main()
		return
	}
	os.Exit(m.Run())
}
