# shellcheck shell=bash
# Sources the whole library. Scripts: source "$(dirname "$0")/../lib/all.sh"; lab_load_env
_lab_lib=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$_lab_lib/common.sh"
# shellcheck source=pki.sh
source "$_lab_lib/pki.sh"
# shellcheck source=kubeconfig.sh
source "$_lab_lib/kubeconfig.sh"
# shellcheck source=bundle.sh
source "$_lab_lib/bundle.sh"
# shellcheck source=node-files.sh
source "$_lab_lib/node-files.sh"
# shellcheck source=control-plane.sh
source "$_lab_lib/control-plane.sh"
# shellcheck source=lb-files.sh
source "$_lab_lib/lb-files.sh"
# shellcheck source=addons.sh
source "$_lab_lib/addons.sh"
# shellcheck source=images.sh
source "$_lab_lib/images.sh"
# shellcheck source=install.sh
source "$_lab_lib/install.sh"
# shellcheck source=calico.sh
source "$_lab_lib/calico.sh"
unset _lab_lib
