// Command mmconnect runs the mmconnect service: connect your users'
// Mattermost accounts with a server URL and a personal access token.
//
//	mmconnect [serve]     run the HTTP server (configured from MMCONNECT_* variables)
//	mmconnect version     print the version
//	mmconnect healthcheck exit 0 when the local /healthz answers 200
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mmconnect:", err)
		os.Exit(1)
	}
}
