// Command composecheck loads a Compose file with the library Docker Compose v2 itself uses
// (compose-spec/compose-go), so CI can validate docker-compose.yml without a Docker engine.
//
// It applies the same steps as `docker compose config`: variables from an env file (and, with
// -os-env, from the environment), interpolation with `${VAR:?message}` errors, schema
// validation, normalization and the consistency checks (unknown services in depends_on,
// undefined volumes and networks). On success it prints the resolved project as JSON on
// stdout; on any error it prints the error on stderr and exits 1.
//
//	go run . -file ../../docker-compose.yml -env-file ../../.env.example
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	file := flag.String("file", "docker-compose.yml", "the Compose file to load")
	envFile := flag.String("env-file", "", "variables for interpolation; empty: none")
	profiles := flag.String("profiles", "*", "comma-separated profiles to enable; * enables all")
	osEnv := flag.Bool("os-env", false, "also take variables from the environment, as docker compose does")
	flag.Parse()

	project, err := load(*file, *envFile, *profiles, *osEnv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "composecheck: %s: %v\n", *file, err)
		os.Exit(1)
	}
	os.Stdout.Write(project)
	os.Stdout.Write([]byte("\n"))
}

func load(file, envFile, profiles string, osEnv bool) ([]byte, error) {
	absFile, err := filepath.Abs(file)
	if err != nil {
		return nil, err
	}
	// The order follows docker compose: environment first (it wins), then the env file.
	options := []cli.ProjectOptionsFn{cli.WithWorkingDirectory(filepath.Dir(absFile))}
	if osEnv {
		options = append(options, cli.WithOsEnv)
	}
	if envFile != "" {
		absEnv, err := filepath.Abs(envFile)
		if err != nil {
			return nil, err
		}
		options = append(options, cli.WithEnvFiles(absEnv), cli.WithDotEnv)
	}
	options = append(options,
		cli.WithProfiles(strings.Split(profiles, ",")),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)

	projectOptions, err := cli.NewProjectOptions([]string{absFile}, options...)
	if err != nil {
		return nil, err
	}
	project, err := projectOptions.LoadProject(context.Background())
	if err != nil {
		return nil, err
	}
	return project.MarshalJSON()
}
