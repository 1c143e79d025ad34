// The argo CLI as Argo builds it (cmd/argo/main.go of argo-workflows v3.7.4).
package main

import (
	"os"

	"github.com/argoproj/argo-workflows/v3/cmd/argo/commands"
)

func main() {
	if err := commands.NewCommand().Execute(); err != nil {
		os.Exit(1)
	}
}
