module traptor.dev/sdk

go 1.24
