// Command uuidgen prints a name-based (SHA-1) UUID: the same on every run.
package main

import (
	"fmt"

	"github.com/google/uuid"
)

func main() {
	fmt.Println(uuid.NewSHA1(uuid.NameSpaceDNS, []byte("hermetic.dev")))
}
