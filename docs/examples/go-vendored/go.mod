module example.org/uuidgen

go 1.19

require github.com/google/uuid v1.3.0
