// Package process starts the built mmconnect binary and watches it, for
// the load and benchmark runs that measure it from outside.
package process

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var listening = regexp.MustCompile(`"msg":"listening","addr":"([^"]+)"`)

// Start runs bin with env and waits (up to 60 s) until it logs that it
// listens; it returns the process and its base URL.
func Start(bin string, env []string) (*exec.Cmd, string, error) {
	cmd := exec.Command(bin)
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	select {
	case a := <-addr:
		return cmd, "http://" + a, nil
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		return nil, "", errors.New("mmconnect did not start listening within 60s")
	}
}

// Stop asks the process to shut down and waits for it.
func Stop(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}

// Kill ends the process the hard way (SIGKILL), as a crash would.
func Kill(cmd *exec.Cmd) error {
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	cmd.Wait()
	return nil
}

// PeakRSS is the process's peak resident memory (VmHWM), 0 if unknown.
func PeakRSS(pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
