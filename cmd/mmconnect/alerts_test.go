package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v4"
)

// alertRules is a Prometheus rules file, as far as the README's uses it;
// unknown fields are refused, as Prometheus refuses them.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

var (
	// alertBlock is the README's rules file: the YAML block that starts
	// with groups.
	alertBlock = regexp.MustCompile("(?s)```yaml\n(groups:\n.*?)```")
	// selector is a metric of ours in an expression, with its matchers.
	selector = regexp.MustCompile(`\b(mmconnect_[a-z_]+)(?:\{((?:[^}"]|"[^"]*")*)\})?`)
	matcher  = regexp.MustCompile(`([a-z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	// httpStatus is any status: the series of one exists only once it was
	// answered.
	httpStatus = regexp.MustCompile(`^[1-5][0-9][0-9]$`)
	alertName  = regexp.MustCompile(`^Mmconnect[A-Za-z]+$`)
)

// The README's alerting rules name only metrics, labels and values the
// service exports: each rule is read as Prometheus reads a rules file,
// and each selector in its expression is held to a scrape of the real
// program, with webhooks on, after a create, a read and a proxied call. A renamed metric,
// label or route breaks this test rather than an operator's alert, which
// would only go quiet. promtool checks the rules and lints the scrape.
func TestREADMEAlertRules(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := alertBlock.FindSubmatch(readme)
	if m == nil {
		t.Fatal("the README has no rules file (a yaml block starting with groups:)")
	}
	var rules alertRules
	dec := yaml.NewDecoder(bytes.NewReader(m[1]))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("the README's rules file: %v", err)
	}

	families, scrape := scrapeFamilies(t)
	names := map[string]bool{}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if !alertName.MatchString(r.Alert) || names[r.Alert] {
				t.Errorf("alert %q: want a unique name starting with Mmconnect", r.Alert)
			}
			names[r.Alert] = true
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("%s: a severity and a summary are wanted", r.Alert)
			}
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
				}
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("%s: unbalanced parentheses in %s", r.Alert, r.Expr)
			}
			sels := selector.FindAllStringSubmatch(r.Expr, -1)
			if len(sels) == 0 {
				t.Errorf("%s: no mmconnect metric in %s", r.Alert, r.Expr)
			}
			for _, s := range sels {
				checkSelector(t, r.Alert, families, s[1], s[2])
			}
		}
	}
	if n < 5 {
		t.Fatalf("the README's rules file has %d rules", n)
	}
	promtoolChecks(t, m[1], scrape)
}

// promtoolChecks has Prometheus's own tool read the rules file, its
// expressions parsed as Prometheus parses them; run the rules' unit tests
// (testdata/alerts.test.yml: each alert fires on what it is for, on time,
// and not on what it is not for, such as the proxy's 503s from
// Mattermost); and lint the scrape (names, units, counters' _total, help
// texts). Debian's prometheus package has it; CI installs it and must not
// skip.
func promtoolChecks(t *testing.T, rulesFile []byte, scrape string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is not installed (CI must install it: apt-get install prometheus)")
		}
		t.Skip("promtool is not installed (apt-get install prometheus)")
	}
	// The unit tests name the rules file beside them.
	dir := t.TempDir()
	unitTests, err := os.ReadFile("testdata/alerts.test.yml")
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"mmconnect.rules.yml": rulesFile, "alerts.test.yml": unitTests} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"check", "rules", "mmconnect.rules.yml"}, {"test", "rules", "alerts.test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	lint := exec.Command(promtool, "check", "metrics")
	lint.Stdin = strings.NewReader(scrape)
	if out, err := lint.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// checkSelector holds one selector, name{matchers}, to the scrape: the
// metric is there (a histogram's _bucket, _count and _sum are its
// family's), each label it matches on is one of its labels, and each
// value matched for equality or inequality is one a series has (an HTTP
// status is any status: its series exists once it was answered).
func checkSelector(t *testing.T, alert string, families map[string]*dto.MetricFamily, name, matchers string) {
	t.Helper()
	fam := families[name]
	if fam == nil {
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if f := families[strings.TrimSuffix(name, suffix)]; f != nil && strings.HasSuffix(name, suffix) && f.GetType() == dto.MetricType_HISTOGRAM {
				fam = f
			}
		}
	}
	if fam == nil {
		t.Errorf("%s: %s is not exported", alert, name)
		return
	}
	if matchers == "" {
		return
	}
	all := matcher.FindAllStringSubmatch(matchers, -1)
	// Between the matchers, a comma each and nothing else.
	if rest := matcher.ReplaceAllString(matchers, ""); strings.TrimSpace(strings.ReplaceAll(rest, ",", "")) != "" || strings.Count(rest, ",") != len(all)-1 {
		t.Errorf("%s: cannot read the matchers {%s} of %s", alert, matchers, name)
	}
	for _, mm := range all {
		label, op, value := mm[1], mm[2], mm[3]
		hasLabel, hasValue := false, false
		for _, series := range fam.GetMetric() {
			for _, l := range series.GetLabel() {
				if l.GetName() == label {
					hasLabel = true
					hasValue = hasValue || l.GetValue() == value
				}
			}
		}
		switch {
		case !hasLabel:
			t.Errorf("%s: %s has no label %s", alert, name, label)
		case (op == "=" || op == "!=") && !hasValue && !(label == "status" && httpStatus.MatchString(value)):
			t.Errorf("%s: no series of %s has %s=%q (matched with %s)", alert, name, label, value, op)
		}
	}
}

// scrapeFamilies runs the program with webhooks on, makes a connection,
// reads it and calls Mattermost through it, and returns its metrics as
// Prometheus parses them, and as scraped.
func scrapeFamilies(t *testing.T) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	mm := newMattermost(t)
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(hooks.Close)
	env := newEnv(t, mm)
	env["MMCONNECT_WEBHOOK_URL"] = hooks.URL + "/mmconnect"
	env["MMCONNECT_WEBHOOK_SECRET"] = e2eWebhookSecret
	in := start(t, env)
	status, c, _ := in.call("POST", "/connections", map[string]any{"server_url": mm.URL, "token": tokenA})
	if status != http.StatusCreated {
		t.Fatalf("create = %d %v", status, c)
	}
	for _, path := range []string{"", "/proxy/api/v4/users/me"} {
		if status, _, _ := in.call("GET", "/connections/"+c["id"].(string)+path, nil); status != http.StatusOK {
			t.Fatalf("GET %s = %d", path, status)
		}
	}
	status, body := scrapeMetrics(t, in.base, in.key)
	if status != http.StatusOK {
		t.Fatalf("metrics = %d", status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	return families, body
}
