package mmconnect_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

func loadCompose(t *testing.T, env []string, profiles ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{"docker-compose.yml"},
		cli.WithName("mmconnect"), cli.WithWorkingDirectory("."), cli.WithEnv(env), cli.WithProfiles(profiles))
	if err != nil {
		t.Fatal(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return project
}

func checkHealthcheck(t *testing.T, svc types.ServiceConfig, want string) {
	t.Helper()
	hc := svc.HealthCheck
	if hc == nil || strings.Join(hc.Test, " ") != want {
		t.Fatalf("%s healthcheck = %+v, want %q", svc.Name, hc, want)
	}
	if hc.Interval == nil || time.Duration(*hc.Interval) <= 0 {
		t.Errorf("%s healthcheck has no interval", svc.Name)
	}
}

// No Docker engine runs in CI, so the compose file is checked by loading it
// with the reference loader and asserting what a deployment relies on.
func TestComposeSingleNode(t *testing.T) {
	project := loadCompose(t, nil) // no variables set: the default must still load
	if len(project.Services) != 1 {
		t.Fatalf("default profile runs %d services, want only mmconnect", len(project.Services))
	}
	svc, err := project.GetService("mmconnect")
	if err != nil {
		t.Fatalf("no mmconnect service: %v", err)
	}
	if svc.Build == nil || svc.Build.Context == "" {
		t.Error("mmconnect is not built from the Dockerfile")
	}
	published := false
	for _, p := range svc.Ports {
		if p.Target == 8080 && p.Published == "8080" {
			published = true
		}
	}
	if !published {
		t.Errorf("port 8080 not published: %+v", svc.Ports)
	}
	mounted := false
	for _, v := range svc.Volumes {
		dataDir := svc.Environment["MMCONNECT_DATA_DIR"]
		if v.Type == "volume" && dataDir != nil && v.Target == *dataDir {
			if _, ok := project.Volumes[v.Source]; ok {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("the data dir is not on a named volume: %+v", svc.Volumes)
	}
	checkHealthcheck(t, svc, "CMD /usr/local/bin/mmconnect healthcheck")
}

func TestComposePostgresProfile(t *testing.T) {
	project := loadCompose(t, []string{"MMCONNECT_API_KEYS=" + strings.Repeat("k", 40), "MMCONNECT_ENCRYPTION_KEY=AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}, "postgres")
	pg, err := project.GetService("postgres")
	if err != nil {
		t.Fatal(err)
	}
	checkHealthcheck(t, pg, "CMD-SHELL pg_isready -U mmconnect -d mmconnect")

	for _, name := range []string{"mmconnect-1", "mmconnect-2"} {
		svc, err := project.GetService(name)
		if err != nil {
			t.Fatal(err)
		}
		dep, ok := svc.DependsOn["postgres"]
		if !ok || dep.Condition != types.ServiceConditionHealthy {
			t.Errorf("%s does not wait for a healthy postgres: %+v", name, svc.DependsOn)
		}
		env := func(k string) string {
			if v := svc.Environment[k]; v != nil {
				return *v
			}
			return ""
		}
		if !strings.HasPrefix(env("MMCONNECT_DATABASE_URL"), "postgres://mmconnect:mmconnect@postgres:5432/mmconnect") {
			t.Errorf("%s database = %q", name, env("MMCONNECT_DATABASE_URL"))
		}
		if env("MMCONNECT_API_KEYS") != strings.Repeat("k", 40) || env("MMCONNECT_ENCRYPTION_KEY") == "" {
			t.Errorf("%s does not take the shared keys from the environment", name)
		}
		checkHealthcheck(t, svc, "CMD /usr/local/bin/mmconnect healthcheck")
	}
	lb, err := project.GetService("lb")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"mmconnect-1", "mmconnect-2"} {
		if dep, ok := lb.DependsOn[r]; !ok || dep.Condition != types.ServiceConditionHealthy {
			t.Errorf("lb does not wait for %s", r)
		}
	}
	if len(lb.Ports) != 1 || lb.Ports[0].Published != "8081" {
		t.Errorf("lb ports = %+v", lb.Ports)
	}
	if len(lb.Configs) != 1 {
		t.Fatalf("lb configs = %+v", lb.Configs)
	}
	conf := project.Configs[lb.Configs[0].Source].Content
	for _, want := range []string{"server mmconnect-1:8080", "server mmconnect-2:8080", "proxy_set_header Host $host;", "X-Request-Id $request_id"} {
		if !strings.Contains(conf, want) {
			t.Errorf("load balancer config lacks %q:\n%s", want, conf)
		}
	}
}

func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(raw)
	for _, want := range []string{"AS build", "USER 65532", `HEALTHCHECK`, `"/usr/local/bin/mmconnect", "healthcheck"`, "VOLUME"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	var froms []string
	for _, line := range strings.Split(df, "\n") {
		if strings.HasPrefix(line, "FROM ") {
			froms = append(froms, line)
		}
	}
	if len(froms) < 2 || !strings.HasPrefix(froms[0], "FROM golang") || strings.Contains(froms[len(froms)-1], "golang") {
		t.Errorf("Dockerfile is not a multi-stage build into a small runtime image: %v", froms)
	}
}
