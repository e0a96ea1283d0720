#!/bin/sh
python -m grpc_tools.protoc -Iproto --python_out=minicaffe/proto proto/caffe.proto
