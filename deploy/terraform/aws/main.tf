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
  description = "AAMI bootstrap token (max_uses >= node_count, with an expiry); stored in SSM Parameter Store, never in user data"
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

  # The user data installs packages (Ubuntu's mirrors answer on 80) and reads the token from
  # SSM's API (443).
  egress {
    description = "Packages (HTTP)"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "Packages and AWS APIs (HTTPS)"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

data "aws_region" "current" {}

# The token lives here, not in the user data: a new token is an in-place update of this
# parameter, and no instance is replaced. Trade-off: it is in the Terraform state (keep the
# state backend encrypted and private), and every node of this module can read the current
# token, so give each token a short expiry and revoke it once its batch has registered.
resource "aws_ssm_parameter" "bootstrap_token" {
  name  = "/aami/bootstrap-token"
  type  = "SecureString"
  value = var.bootstrap_token
}

resource "aws_iam_role" "gpu_node" {
  name = "aami-gpu-node"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole", Principal = { Service = "ec2.amazonaws.com" } }]
  })
}

# Read this one parameter, nothing else. The default aws/ssm key decrypts it for SSM.
resource "aws_iam_role_policy" "read_bootstrap_token" {
  name = "read-aami-bootstrap-token"
  role = aws_iam_role.gpu_node.id
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "ssm:GetParameter", Resource = aws_ssm_parameter.bootstrap_token.arn }]
  })
}

resource "aws_iam_instance_profile" "gpu_node" {
  name = "aami-gpu-node"
  role = aws_iam_role.gpu_node.name
}

# The start-up script: it names where the token is, never the token.
module "startup" {
  source            = "../startup"
  cloud             = "aws"
  config_server_url = var.config_server_url
  instance_type     = var.instance_type
  fetch_token = templatefile("${path.module}/fetch-token.sh.tpl", {
    region          = data.aws_region.current.name
    token_parameter = aws_ssm_parameter.bootstrap_token.name
  })
}

resource "aws_instance" "gpu_node" {
  count                  = var.node_count
  ami                    = var.ami_id
  instance_type          = var.instance_type
  subnet_id              = var.subnet_id
  vpc_security_group_ids = [aws_security_group.gpu_nodes.id]
  iam_instance_profile   = aws_iam_instance_profile.gpu_node.name

  # Names where the token is, never the token: rotating it leaves this unchanged.
  user_data = module.startup.script

  # IMDSv2 only: the role's credentials are not readable by a plain GET from the VM.
  metadata_options {
    http_tokens = "required"
  }

  tags = {
    Name      = "ml-training-node-${count.index + 1}"
    ManagedBy = "terraform"
  }
}
