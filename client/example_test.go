package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
)

// A workload fetches the payload bound to it under a name: over the Unix
// socket as its uid, or with a token (COFFER_TOKEN). The README's "Go
// client" section shows this function's body (TestReadmeShowsTheExample).
func Example() {
	ctx := context.Background()
	c := client.NewClient("/run/coffer/coffer.sock") // inside a VM: client.NewVsockClient(2, 9999)
	if tok := os.Getenv("COFFER_TOKEN"); tok != "" {
		c = c.WithToken(tok)
	}

	st, err := c.Status(ctx)
	if err != nil {
		log.Fatal(err) // *client.UnreachableError: no daemon at the socket
	}
	fmt.Println("coffer", st.Version, "HSM healthy:", st.HSM.Healthy)

	payload, err := c.Deliver(ctx, "dbpass")
	switch {
	case errors.Is(err, api.ErrNotFound):
		log.Fatal("dbpass is not bound to this caller")
	case err != nil:
		log.Fatal(err)
	}
	defer clear(payload) // the only copy: wipe it when done
	// ... use payload ...
}
