terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.0" }
  }
}

variable "config_server_url" {
  description = "AAMI config server, reachable from the nodes (port 8080)"
  type        = string
}

variable "bootstrap_token" {
  description = "AAMI bootstrap token (max_uses >= node_count, with an expiry)"
  type        = string
  sensitive   = true
}

variable "node_count" {
  type    = number
  default = 10
}

variable "instance_type" {
  type    = string
  default = "p4d.24xlarge"
}

variable "ami_id" {
  description = "Ubuntu 22.04/24.04 with NVIDIA drivers"
  type        = string
}

variable "subnet_id" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "prometheus_cidr" {
  description = "Where Prometheus scrapes from"
  type        = string
}

variable "config_server_cidr" {
  type = string
}

resource "aws_security_group" "gpu_nodes" {
  name        = "aami-gpu-nodes"
  description = "AAMI monitored GPU nodes"
  vpc_id      = var.vpc_id

  ingress {
    description = "Node Exporter (Prometheus to node)"
    from_port   = 9100
    to_port     = 9100
    protocol    = "tcp"
    cidr_blocks = [var.prometheus_cidr]
  }

  ingress {
    description = "DCGM Exporter (Prometheus to node)"
    from_port   = 9400
    to_port     = 9400
    protocol    = "tcp"
    cidr_blocks = [var.prometheus_cidr]
  }

  egress {
    description = "AAMI config server"
    from_port   = 8080
    to_port     = 8080
    protocol    = "tcp"
    cidr_blocks = [var.config_server_cidr]
  }

  egress {
    description = "Packages"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_instance" "gpu_node" {
  count                  = var.node_count
  ami                    = var.ami_id
  instance_type          = var.instance_type
  subnet_id              = var.subnet_id
  vpc_security_group_ids = [aws_security_group.gpu_nodes.id]

  user_data = templatefile("${path.module}/userdata.sh.tpl", {
    config_server_url = var.config_server_url
    bootstrap_token   = var.bootstrap_token
    instance_type     = var.instance_type
  })

  # IMDSv2 only: the user data (and its token) is not readable by a plain GET from the VM.
  metadata_options {
    http_tokens = "required"
  }

  tags = {
    Name      = "ml-training-node-${count.index + 1}"
    ManagedBy = "terraform"
  }
}
