"""The Service Catalog side of CreateProject: its preconditions (the portfolio enabled, the
template's roles present) and the template's product, newest version and launch path.

The built-in templates are products of the imported portfolio "Amazon SageMaker Solutions and
ML Ops products". A principal associated with that portfolio finds them with the end-user
search; an administrator who is not finds them only through the admin calls on the imported
portfolios. Product IDs differ by region and account, so they are looked up, never assumed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from modeldeploy.providers.errors import TerminalError, aws, aws_code, from_aws
from modeldeploy.remote import ProjectRequest

LAUNCH_ROLE = "AmazonSageMakerServiceCatalogProductsLaunchRole"
USE_ROLE = "AmazonSageMakerServiceCatalogProductsUseRole"
TOGGLE = 'Studio\'s "Enable Projects, and JumpStart templates" toggle'


@dataclass(frozen=True)
class Product:
    """What CreateProject's ServiceCatalogProvisioningDetails names."""

    product_id: str
    artifact_id: str | None = None  # None: SageMaker takes the product's latest
    path_id: str | None = None  # None: SageMaker takes the only launch path


def _pages(what: str, call: Any, key: str, **kwargs: Any) -> Iterator[dict]:
    """Items of a Service Catalog listing, page by page (PageToken / NextPageToken)."""
    while True:
        with aws(what):
            page = call(**kwargs)
        yield from page.get(key, [])
        if not page.get("NextPageToken"):
            return
        kwargs["PageToken"] = page["NextPageToken"]


def _newest(artifacts: list[dict]) -> str | None:
    # A version marked DEPRECATED is still listed; prefer the newest that is not.
    current = [a for a in artifacts if a.get("Guidance") != "DEPRECATED"] or artifacts
    dated = [a for a in current if a.get("Id")]
    if not dated:
        return None
    never = datetime.min.replace(tzinfo=UTC)
    return max(dated, key=lambda a: a.get("CreatedTime") or never)["Id"]


class Catalog:
    """`clients(service)` gives the iam and servicecatalog clients."""

    def __init__(self, sm: Any, clients: Callable[[str], Any]) -> None:
        self.sm = sm
        self.clients = clients

    @property
    def sc(self) -> Any:
        return self.clients("servicecatalog")

    def provisioning(self, request: ProjectRequest, params: list[dict]) -> dict[str, Any]:
        """CreateProject's ServiceCatalogProvisioningDetails, once the preconditions hold."""
        self._check_portfolio()
        for role in (LAUNCH_ROLE, USE_ROLE):
            self._check_role(role)
        product = self.product(request)
        details: dict[str, Any] = {"ProductId": product.product_id}
        if product.artifact_id:
            details["ProvisioningArtifactId"] = product.artifact_id
        if product.path_id:
            details["PathId"] = product.path_id
        details["ProvisioningParameters"] = params
        return details

    def _check_portfolio(self) -> None:
        with aws("GetSagemakerServicecatalogPortfolioStatus"):
            status = self.sm.get_sagemaker_servicecatalog_portfolio_status().get("Status", "")
        if status != "Enabled":
            raise TerminalError(
                f"SageMaker's Service Catalog portfolio of project templates is "
                f"{status or 'not'} enabled in this account and region: run `aws sagemaker "
                f"enable-sagemaker-servicecatalog-portfolio`, or turn on {TOGGLE}"
            )

    def _check_role(self, role: str) -> None:
        try:
            self.clients("iam").get_role(RoleName=role)
        except ClientError as err:
            code = aws_code(err)
            if code == "NoSuchEntity":
                raise TerminalError(
                    f"the IAM role service-role/{role} does not exist; SageMaker project "
                    f"templates need it: turn on {TOGGLE} (it creates the role), or create it "
                    "with the AWS managed policy of that name"
                ) from err
            if code in ("AccessDenied", "AccessDeniedException"):
                # The operator need not hold iam:GetRole; a missing launch role still shows,
                # as CreateProject's "assuming the role" error (project._create_error).
                return
            raise from_aws(err, f"GetRole {role}") from err
        except BotoCoreError as err:
            raise from_aws(err, f"GetRole {role}") from err

    def product(self, request: ProjectRequest) -> Product:
        """The product a Service Catalog request names; TerminalError when none is visible."""
        if request.product_id:
            return Product(request.product_id, request.provisioning_artifact_id)
        name = request.template_product_name or ""
        found = self._as_end_user(name) or self._as_admin(name)
        if found is None:
            raise TerminalError(
                f"no Service Catalog product named {name!r} is visible to the operator's "
                "identity: enable SageMaker projects (aws sagemaker "
                "enable-sagemaker-servicecatalog-portfolio, or Studio's project templates "
                "toggle) and give the operator's role access to the portfolio \"Amazon "
                'SageMaker Solutions and ML Ops products", or name the product by '
                "spec.deployment.project.productId"
            )
        return found

    def _as_end_user(self, name: str) -> Product | None:
        search = _pages(
            f"SearchProducts {name!r}",
            self.sc.search_products,
            "ProductViewSummaries",
            Filters={"FullTextSearch": [name]},
        )
        # The full-text search also matches longer names ("...model building, training, and
        # deployment"): only the exact name is the template asked for.
        product_id = next((p["ProductId"] for p in search if p.get("Name") == name), None)
        if product_id is None:
            return None
        with aws(f"DescribeProduct {product_id}"):
            desc = self.sc.describe_product(Id=product_id)
        paths = _pages(
            f"ListLaunchPaths {product_id}",
            self.sc.list_launch_paths,
            "LaunchPathSummaries",
            ProductId=product_id,
        )
        path_id = next((p["Id"] for p in paths if p.get("Id")), None)
        return Product(product_id, _newest(desc.get("ProvisioningArtifacts", [])), path_id)

    def _as_admin(self, name: str) -> Product | None:
        shares = _pages(
            "ListAcceptedPortfolioShares IMPORTED",
            self.sc.list_accepted_portfolio_shares,
            "PortfolioDetails",
            PortfolioShareType="IMPORTED",
        )
        for portfolio in shares:
            details = _pages(
                f"SearchProductsAsAdmin {portfolio['Id']} {name!r}",
                self.sc.search_products_as_admin,
                "ProductViewDetails",
                PortfolioId=portfolio["Id"],
                Filters={"FullTextSearch": [name]},
            )
            summaries = (d.get("ProductViewSummary", {}) for d in details)
            product_id = next((s["ProductId"] for s in summaries if s.get("Name") == name), None)
            if product_id is None:
                continue
            with aws(f"DescribeProductAsAdmin {product_id}"):
                desc = self.sc.describe_product_as_admin(Id=product_id)
            # No launch path: an administrator that is not an end user of the portfolio
            # cannot list them, and SageMaker picks the path when there is only one.
            return Product(product_id, _newest(desc.get("ProvisioningArtifactSummaries", [])))
        return None
