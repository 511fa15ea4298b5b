// Package process starts the built mmconnect binary and watches it, for
// the load and benchmark runs that measure it from outside.
package process

import (
	"bufio"
	"errors"
	"fmt"
	"io"
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
// listens; it returns the process and its base URL. Errors: it could not
// start, it exited first (with the last line it wrote), or the wait ran
// out.
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
	exited := make(chan string, 1) // the last line written
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		last := ""
		for sc.Scan() {
			last = sc.Text()
			if m := listening.FindStringSubmatch(last); m != nil {
				addr <- m[1]
				// Only drained from now on, as fast as it comes: the
				// server writes its log to this pipe, and a pipe that
				// fills stalls every request the server is serving.
				io.Copy(io.Discard, stderr)
				break
			}
		}
		exited <- last
	}()
	select {
	case a := <-addr:
		return cmd, "http://" + a, nil
	case last := <-exited:
		cmd.Wait()
		return nil, "", fmt.Errorf("mmconnect exited before listening: %s", last)
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

// clockTick is the kernel's USER_HZ, the unit of /proc's CPU times: 100 on
// every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// CPU is the processor time (user and system) the process has used so far,
// 0 if unknown; compare two readings.
func CPU(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; the fields after its
	// closing parenthesis start at field 3, so utime and stime (14 and 15)
	// are the 12th and 13th.
	i := strings.LastIndexByte(string(raw), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * clockTick
}

// MachineBusy is the processor time every core of the machine has spent
// on anything but idling and waiting for I/O, 0 if unknown; compare two
// readings.
func MachineBusy() time.Duration {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	// user nice system idle iowait irq softirq steal: user to softirq but
	// idle and iowait (steal is time the hypervisor gave to others).
	for _, i := range []int{1, 2, 3, 6, 7} {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		busy += v
	}
	return time.Duration(busy) * clockTick
}
