# The start-up script of every cloud's VMs: bootstrap.sh.tpl with the cloud's way of reading
# the bootstrap token (fetch_token). The values are checked here because they are written
# into a shell script: each must be data, never something a shell would read as code.
variable "cloud" {
  type = string
  validation {
    condition     = contains(["aws", "gcp", "azure"], var.cloud)
    error_message = "cloud is aws, gcp or azure."
  }
}

variable "config_server_url" {
  type = string
  validation {
    condition     = can(regex("^https?://[A-Za-z0-9.:/_-]+$", var.config_server_url))
    error_message = "config_server_url must be a plain http(s) URL such as http://config-server.internal:8080."
  }
}

variable "instance_type" {
  type = string
  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+$", var.instance_type))
    error_message = "instance_type is the cloud's machine type or VM size, such as p4d.24xlarge."
  }
}

variable "fetch_token" {
  description = "A shell function, fetch_token, that writes the bootstrap token to $TOKEN_FILE"
  type        = string
}

output "script" {
  value = templatefile("${path.module}/bootstrap.sh.tpl", {
    cloud             = var.cloud
    config_server_url = var.config_server_url
    instance_type     = var.instance_type
    fetch_token       = var.fetch_token
  })
}
