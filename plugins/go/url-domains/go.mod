module url-domains

go 1.24
