module github.com/goprobe-e2e/shapes/v2

go 1.19
