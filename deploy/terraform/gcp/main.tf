terraform {
  required_providers {
    google = { source = "hashicorp/google", version = "~> 5.0" }
  }
}

provider "google" {
  project = var.project
}

variable "project" {
  type = string
}

variable "config_server_url" {
  description = "AAMI config server, reachable from the nodes (port 8080)"
  type        = string
}

variable "bootstrap_token" {
  description = "AAMI bootstrap token (max_uses >= node_count, with an expiry); stored in Secret Manager, never in instance metadata"
  type        = string
  sensitive   = true
}

variable "node_count" {
  type    = number
  default = 10
}

variable "machine_type" {
  type    = string
  default = "a2-highgpu-8g"
}

variable "zone" {
  type    = string
  default = "us-central1-a"
}

variable "network" {
  type    = string
  default = "default"
}

variable "prometheus_cidr" {
  type = string
}

resource "google_compute_firewall" "aami_exporters" {
  name          = "aami-exporters"
  network       = var.network
  source_ranges = [var.prometheus_cidr]
  target_tags   = ["aami-node"]

  allow {
    protocol = "tcp"
    ports    = ["9100", "9400"]
  }
}

# The token lives here, not in the start-up script: a new token is a new secret version,
# and no instance is replaced. Trade-off: it is in the Terraform state (keep the state
# bucket private), and every node of this module can read the current token, so give each
# token a short expiry and revoke it once its batch has registered.
resource "google_secret_manager_secret" "bootstrap_token" {
  secret_id = "aami-bootstrap-token"
  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "bootstrap_token" {
  secret      = google_secret_manager_secret.bootstrap_token.id
  secret_data = var.bootstrap_token
}

# The nodes' own identity, allowed to read this one secret and nothing else.
resource "google_service_account" "gpu_node" {
  account_id   = "aami-gpu-node"
  display_name = "AAMI GPU nodes"
}

resource "google_secret_manager_secret_iam_member" "gpu_node" {
  secret_id = google_secret_manager_secret.bootstrap_token.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.gpu_node.email}"
}

# The start-up script: it names where the token is, never the token.
module "startup" {
  source            = "../startup"
  cloud             = "gcp"
  config_server_url = var.config_server_url
  instance_type     = var.machine_type
  fetch_token = templatefile("${path.module}/fetch-token.sh.tpl", {
    token_secret = google_secret_manager_secret.bootstrap_token.id
  })
}

resource "google_compute_instance" "gpu_node" {
  count        = var.node_count
  name         = "ml-training-node-${count.index + 1}"
  machine_type = var.machine_type
  zone         = var.zone
  tags         = ["aami-node"]

  boot_disk {
    initialize_params {
      image = "ubuntu-os-cloud/ubuntu-2204-lts"
      size  = 200
    }
  }

  network_interface {
    network = var.network
    # An ephemeral public IP, as in the registration guide: without one (or Cloud NAT) the
    # start-up script reaches neither the package mirrors nor Secret Manager.
    access_config {}
  }

  scheduling {
    on_host_maintenance = "TERMINATE" # required for GPUs
  }

  # Names where the token is, never the token: rotating it leaves this unchanged.
  metadata_startup_script = module.startup.script

  # Access is decided by IAM (the secret's binding above); the cloud-platform scope lets
  # the VM's token reach Secret Manager at all.
  service_account {
    email  = google_service_account.gpu_node.email
    scopes = ["cloud-platform"]
  }
}
