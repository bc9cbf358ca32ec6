//go:build tools

// Package tools pins the S3 server the local default runs (SeaweedFS's weed).
package tools

import (
	_ "github.com/seaweedfs/seaweedfs/weed"
)
