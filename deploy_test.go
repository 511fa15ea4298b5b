package mmconnect_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
)

// No Docker engine runs in CI, so the compose file is checked by loading it
// with the reference loader and asserting what a deployment relies on.
func TestComposeFile(t *testing.T) {
	opts, err := cli.NewProjectOptions([]string{"docker-compose.yml"},
		cli.WithName("mmconnect"), cli.WithWorkingDirectory("."), cli.WithEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
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
	hc := svc.HealthCheck
	if hc == nil || strings.Join(hc.Test, " ") != "CMD /usr/local/bin/mmconnect healthcheck" {
		t.Fatalf("healthcheck = %+v, want mmconnect healthcheck", hc)
	}
	if hc.Interval == nil || time.Duration(*hc.Interval) <= 0 {
		t.Error("healthcheck has no interval")
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
