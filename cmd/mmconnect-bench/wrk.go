package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// With -load wrk the requests come from wrk, the load generator of the
// figures the work started from, rather than from this process's Go
// client. The Go client takes a little more of the two cores the server
// shares with it, most of all beside the bare handler's cheap requests,
// so its ratios to the bare handler come out higher than wrk's.

// wrkRequest is a measurement's request, as wrk's script and the Go
// client both make it: mode "get" sends GET path as is, "random" GETs a
// random one of rows seeded connections, and "create" POSTs connections,
// each for a distinct end user, with the stand-in's tokens in turn.
type wrkRequest struct {
	mode string
	path string
}

// wrkScript is the Lua behind every wrkRequest. id(i) must write row i's
// id as seeded.id does (TestWrkScriptRequests holds it to that);
// token(k) is the bench's token(k).
const wrkScript = `
local alpha = "234567abcdefghijklmnopqrstuvwxyz"
local function ch(v) return alpha:sub(v + 1, v + 1) end
function id(i)
  return "conn_" .. string.rep("2", 21) .. ch(math.floor(i / 262144) % 32) .. ch(math.floor(i / 8192) % 32)
    .. ch(math.floor(i / 256) % 32) .. ch(math.floor(i / 8) % 32) .. ch((i % 8) * 4)
end
function token(k) return string.format("b%09d%s", k, string.rep("a", 16)) end

local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  mode = os.getenv("BENCH_MODE")
  rows = tonumber(os.getenv("BENCH_ROWS") or "1")
  mm = os.getenv("BENCH_MM")
  creators = tonumber(os.getenv("BENCH_CREATORS") or "1")
  offset = tonumber(os.getenv("BENCH_OFFSET") or "0") + tid * 100000000
  counter = 0
  headers = {["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")}
  math.randomseed(os.time() * 16 + tid)
end

function request()
  if mode == "random" then
    return wrk.format("GET", "/connections/" .. id(math.random(0, rows - 1)), headers)
  elseif mode == "create" then
    counter = counter + 1
    local k = offset + counter
    local body = string.format('{"server_url":"%s","token":"%s","end_user_id":"bench-%d"}', mm, token(k % creators), k)
    headers["Content-Type"] = "application/json"
    return wrk.format("POST", "/connections", headers, body)
  end
  return wrk.format("GET", nil, headers)
end
`

// wrkOffsetStep keeps the end users of successive create runs apart: each
// wrk thread numbers its own from offset + thread×10⁸.
const wrkOffsetStep = 1_000_000_000

// runWrk measures url (the server's base URL, or a full URL for "get")
// with wrk for d, with clients connections over two threads, and returns
// the result and the CPU wrk used. Requests answered with a status other
// than 2xx or 3xx count as errors, as do socket errors. Errors: wrk cannot
// be run or its report read.
func runWrk(dir, name, url string, req wrkRequest, clients int, d time.Duration, env []string) (result, time.Duration, error) {
	script := filepath.Join(dir, "bench.lua")
	if err := os.WriteFile(script, []byte(wrkScript), 0o600); err != nil {
		return result{}, 0, err
	}
	target := url + req.path
	cmd := exec.Command("wrk", "-t2", fmt.Sprintf("-c%d", clients), fmt.Sprintf("-d%ds", max(1, int(d.Seconds()))),
		"--latency", "-s", script, target)
	cmd.Env = append(os.Environ(), append(env, "BENCH_MODE="+req.mode)...)
	out, err := cmd.Output()
	if err != nil {
		return result{}, 0, fmt.Errorf("wrk %s: %w (is wrk installed? apt-get install wrk)", name, err)
	}
	r, err := parseWrk(string(out))
	if err != nil {
		return result{}, 0, fmt.Errorf("wrk %s: %w", name, err)
	}
	r.name = name
	return r, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

// parseWrk reads wrk's report (run with --latency): the requests and the
// time they took, p50 and p99, and the errors (answers that are not 2xx
// or 3xx, and socket errors). Errors: a figure is missing.
func parseWrk(report string) (result, error) {
	var r result
	var total int
	var non2xx int64
	var haveN, have50, have99 bool
	sc := bufio.NewScanner(strings.NewReader(report))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			n, err1 := strconv.Atoi(f[0])
			el, err2 := time.ParseDuration(strings.TrimSuffix(f[3], ","))
			if err1 != nil || err2 != nil {
				return r, fmt.Errorf("unreadable total %q", sc.Text())
			}
			total, r.elapsed, haveN = n, el, true
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			v, err := time.ParseDuration(f[1])
			if err != nil {
				return r, fmt.Errorf("unreadable latency %q", sc.Text())
			}
			if f[0] == "50%" {
				r.p50, have50 = v, true
			} else {
				r.p99, have99 = v, true
			}
		case len(f) == 5 && f[0] == "Non-2xx":
			n, err := strconv.ParseInt(f[4], 10, 64)
			if err != nil {
				return r, fmt.Errorf("unreadable error count %q", sc.Text())
			}
			non2xx = n
		case len(f) >= 3 && f[0] == "Socket" && f[1] == "errors:":
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 2; i+1 < len(f); i += 2 {
				n, err := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				if err != nil {
					return r, fmt.Errorf("unreadable socket errors %q", sc.Text())
				}
				r.errs += n
			}
		}
	}
	if !haveN || !have50 || !have99 {
		return r, fmt.Errorf("no total and latency distribution in its report:\n%s", report)
	}
	r.n, r.errs = total-int(non2xx), r.errs+non2xx // as the Go client counts: answered as wanted, or an error
	return r, nil
}
