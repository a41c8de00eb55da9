module gosymref

go 1.19
