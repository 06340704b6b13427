// kstatus prints what kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status, the library behind
// Flux's `wait: true` health checks, kubectl's and kpt's waits) computes for one object.
//
// Usage: kubectl get mdep NAME -o json | kstatus   # prints {"status":"InProgress","message":…}
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	// UnmarshalJSON, not encoding/json: integers stay int64, as they are on a live client's
	// objects (kstatus refuses a float64 observedGeneration).
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(input); err != nil {
		fail(err)
	}
	result, err := status.Compute(obj)
	if err != nil {
		fail(err)
	}
	out, err := json.Marshal(map[string]string{
		"status":  result.Status.String(),
		"message": result.Message,
	})
	if err != nil {
		fail(err)
	}
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kstatus:", err)
	os.Exit(2)
}
